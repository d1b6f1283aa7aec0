// Package backoff is exponential backoff with jitter, for every loop that
// waits for something to come back (the broker, the database, a retry).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with "equal jitter": half of each wait is
// fixed, half random, so waits grow reliably while replicas that failed
// together do not retry in step.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the wait before retry number attempt (0 for the first retry):
// a random duration in [d/2, d] where d = Base*2^attempt, capped at Max.
func (bo Backoff) Delay(attempt int) time.Duration {
	d := bo.Base
	for i := 0; i < attempt && d < bo.Max; i++ {
		d *= 2
	}
	d = min(d, bo.Max)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
