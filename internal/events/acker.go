package events

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AckInterval is how often a consumer sends the acks of finished messages.
// Handlers that each wait a while (a payment's second, a mail's two) finish
// a few at a time: at 5 ms nearly every ack went alone (4 acks per order at
// 80 orders/s); at 25 ms the run at the front of the window is long enough
// to share one. The ack is not on the saga's path (the effect is committed
// and the next event published before it), so the wait costs no latency;
// a consumer that crashes meanwhile has those messages redelivered, and
// the inboxes drop them.
const AckInterval = 25 * time.Millisecond

// acker settles one channel's deliveries in coalesced acks: every
// AckInterval it acks the run of finished deliveries at the front of the
// channel's unsettled ones with one basic.ack(multiple=true). A message is
// still acked only after its handler returned (its effect committed or its
// copy confirmed in a retry queue), and because handlers finish out of
// order, multiple=true only ever covers delivery tags that are all
// finished: a finished delivery behind a running one waits for it.
// Deliveries handed back (requeued) are nacked one by one in their turn.
// A finished delivery held up longer than ackHold by a slow one ahead of it
// is settled alone, so one slow handler cannot fill the prefetch window
// with finished, unacked messages.
type acker struct {
	ch *amqp.Channel

	mu      sync.Mutex
	pending []uint64           // unsettled delivery tags in the order received (ascending)
	state   map[uint64]settled // by tag; st 0 while running
	now     func() time.Time
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	// When finished deliveries reach limit (half the prefetch window) the
	// acks go at once, without waiting out AckInterval: a window full of
	// finished, unacked messages would stop the broker's deliveries.
	limit    int
	finished int // settled, not yet taken off by ops
	full     chan struct{}
}

const (
	settleAck uint8 = iota + 1
	settleRequeue
)

type settled struct {
	st uint8
	at time.Time // when it finished
}

// ackHold is how long a finished delivery may wait for a slower one ahead
// of it before it is acked alone.
const ackHold = 50 * time.Millisecond

func newAcker(ch *amqp.Channel, prefetch int) *acker {
	a := &acker{ch: ch, state: map[uint64]settled{}, now: time.Now, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}),
		limit: max(prefetch/2, 1), full: make(chan struct{}, 1)}
	go a.run()
	return a
}

// add registers a delivery before it is handed to a handler.
func (a *acker) add(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = append(a.pending, tag)
	a.state[tag] = settled{}
}

// settle marks a delivery finished: acked, or handed back to the queue.
func (a *acker) settle(tag uint64, ack bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.state[tag]; !ok {
		return
	}
	st := settleRequeue
	if ack {
		st = settleAck
	}
	if a.state[tag].st == 0 {
		a.finished++
	}
	a.state[tag] = settled{st: st, at: a.now()}
	select {
	case a.kick <- struct{}{}:
	default:
	}
	if a.finished >= a.limit {
		select {
		case a.full <- struct{}{}:
		default:
		}
	}
}

// stop sends what is settled and ends the acker.
func (a *acker) stop() {
	close(a.done)
	<-a.stopped
}

func (a *acker) run() {
	defer close(a.stopped)
	for {
		select {
		case <-a.done:
			a.flush()
			return
		case <-a.kick:
		}
		// Gather what finishes within the interval into one ack, unless
		// half the window is finished already.
		select {
		case <-a.done:
			a.flush()
			return
		case <-time.After(AckInterval):
		case <-a.full:
		}
		a.flush()
	}
}

// op is one settlement to send: an ack of everything up to tag (multiple)
// or of tag alone, or a requeue of tag.
type op struct {
	tag      uint64
	multiple bool
	requeue  bool
}

// ops takes the settled front of pending off and returns what to send.
func (a *acker) ops() []op {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []op
	run := 0 // acks gathered at the end of out
	for len(a.pending) > 0 {
		tag := a.pending[0]
		st := a.state[tag].st
		if st == 0 {
			break
		}
		a.pending = a.pending[1:]
		delete(a.state, tag)
		a.finished--
		if st == settleRequeue {
			out = append(out, op{tag: tag, requeue: true})
			run = 0
			continue
		}
		if run > 0 {
			out[len(out)-1] = op{tag: tag, multiple: true}
		} else {
			out = append(out, op{tag: tag})
		}
		run++
	}
	// Behind a running delivery: settle alone what has waited too long.
	if len(a.pending) > 1 {
		now := a.now()
		keep := a.pending[:1]
		for _, tag := range a.pending[1:] {
			s := a.state[tag]
			if s.st == 0 || now.Sub(s.at) < ackHold {
				keep = append(keep, tag)
				continue
			}
			delete(a.state, tag)
			a.finished--
			out = append(out, op{tag: tag, requeue: s.st == settleRequeue})
		}
		a.pending = keep
	}
	if len(a.pending) == 0 {
		a.pending = nil // let the backing array go
	}
	return out
}

func (a *acker) flush() {
	for _, o := range a.ops() {
		// A channel that closed meanwhile has handed its deliveries back:
		// the errors say nothing new.
		if o.requeue {
			_ = a.ch.Nack(o.tag, false, true)
		} else {
			_ = a.ch.Ack(o.tag, o.multiple)
		}
	}
}
