package events

import (
	"fmt"
	"testing"
	"time"
)

// Handlers finish out of order: an ack with multiple=true must only cover
// delivery tags that are all finished.
func TestAckerCoalescesOnlyFinishedRuns(t *testing.T) {
	tests := []struct {
		name    string
		settled map[uint64]uint8 // of tags 1..5; missing means still running
		want    string
	}{
		{"AllFinished", map[uint64]uint8{1: settleAck, 2: settleAck, 3: settleAck, 4: settleAck, 5: settleAck}, "[{5 true false}]"},
		{"FirstStillRunning", map[uint64]uint8{2: settleAck, 3: settleAck, 4: settleAck, 5: settleAck}, "[]"},
		{"GapInTheMiddle", map[uint64]uint8{1: settleAck, 2: settleAck, 4: settleAck, 5: settleAck}, "[{2 true false}]"},
		{"OneAlone", map[uint64]uint8{1: settleAck, 3: settleAck}, "[{1 false false}]"},
		{"RequeueSplitsTheRun", map[uint64]uint8{1: settleAck, 2: settleRequeue, 3: settleAck, 4: settleAck}, "[{1 false false} {2 false true} {4 true false}]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			a := &acker{state: map[uint64]settled{}, now: func() time.Time { return now }, kick: make(chan struct{}, 1)}
			for tag := uint64(1); tag <= 5; tag++ {
				a.add(tag)
			}
			for tag, st := range tt.settled {
				a.settle(tag, st == settleAck)
			}
			if got := fmt.Sprint(a.ops()); got != tt.want {
				t.Fatalf("ops = %s, want %s", got, tt.want)
			}
			// Held up by a slow delivery ahead for longer than ackHold,
			// the finished ones are acked alone; the running one never.
			now = now.Add(ackHold)
			for _, o := range a.ops() {
				if _, done := tt.settled[o.tag]; !done || o.multiple {
					t.Fatalf("after ackHold: op %+v, want single settlements of finished deliveries", o)
				}
			}
			for tag := range tt.settled {
				if _, left := a.state[tag]; left {
					t.Fatalf("after ackHold: finished delivery %d still unsettled", tag)
				}
			}
		})
	}
}

func TestResumeAttemptResetsAfterHealthyPeriod(t *testing.T) {
	if got := resumeAttempt(9, time.Second); got != 9 {
		t.Fatalf("after a short life: attempt %d, want 9", got)
	}
	if got := resumeAttempt(9, HealthyPeriod); got != 0 {
		t.Fatalf("after a healthy period: attempt %d, want 0", got)
	}
}

// Once half the prefetch window is finished, the acks go without waiting
// out AckInterval; what ops takes off no longer counts.
func TestAckerFlushesAtOnceWhenHalfTheWindowIsFinished(t *testing.T) {
	a := &acker{state: map[uint64]settled{}, now: time.Now, kick: make(chan struct{}, 1), limit: 2, full: make(chan struct{}, 1)}
	signalled := func() bool {
		select {
		case <-a.full:
			return true
		default:
			return false
		}
	}
	for tag := uint64(1); tag <= 4; tag++ {
		a.add(tag)
	}
	a.settle(2, true)
	a.settle(2, true) // settled twice: counts once
	if signalled() {
		t.Fatal("one finished delivery of a window of four signalled a full window")
	}
	a.settle(1, true)
	if !signalled() {
		t.Fatal("half the window finished, and no flush was asked for")
	}
	if got := fmt.Sprint(a.ops()); got != "[{2 true false}]" {
		t.Fatalf("ops = %s", got)
	}
	a.settle(3, true)
	if signalled() || a.finished != 1 {
		t.Fatalf("after the flush, one more finished delivery signalled a full window (finished %d)", a.finished)
	}
}
