package backoff

import (
	"testing"
	"time"
)

// Each wait is d = Base*2^attempt capped at Max, with equal jitter: random
// in [d/2, d], spread over the range rather than fixed.
func TestBackoff(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		var low, high bool // seen in the lower and the upper half of the range
		for range 50 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
			low, high = low || d < want*3/4, high || d > want*3/4
		}
		if !low || !high {
			t.Errorf("Delay(%d): 50 waits not spread over [%v, %v] (below 3/4: %v, above: %v)", attempt, want/2, want, low, high)
		}
	}
	// A high attempt does not overflow past Max.
	if d := b.Delay(1000); d < b.Max/2 || d > b.Max {
		t.Errorf("Delay(1000) = %v, want within [%v, %v]", d, b.Max/2, b.Max)
	}
	if d := (Backoff{}).Delay(3); d != 0 {
		t.Errorf("zero Backoff: Delay = %v, want 0", d)
	}
}
