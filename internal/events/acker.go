package events

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AckInterval is how often a consumer sends the acks of finished messages.
const AckInterval = 5 * time.Millisecond

// acker settles one channel's deliveries in coalesced acks: every
// AckInterval it acks the run of finished deliveries at the front of the
// channel's unsettled ones with one basic.ack(multiple=true). A message is
// still acked only after its handler returned (its effect committed or its
// copy confirmed in a retry queue), and because handlers finish out of
// order, multiple=true only ever covers delivery tags that are all
// finished: a finished delivery behind a running one waits for it.
// Deliveries handed back (requeued) are nacked one by one in their turn.
type acker struct {
	ch *amqp.Channel

	mu      sync.Mutex
	pending []uint64         // unsettled delivery tags in the order received (ascending)
	state   map[uint64]uint8 // 0 running, settleAck, settleRequeue
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

const (
	settleAck uint8 = iota + 1
	settleRequeue
)

func newAcker(ch *amqp.Channel) *acker {
	a := &acker{ch: ch, state: map[uint64]uint8{}, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go a.run()
	return a
}

// add registers a delivery before it is handed to a handler.
func (a *acker) add(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = append(a.pending, tag)
	a.state[tag] = 0
}

// settle marks a delivery finished: acked, or handed back to the queue.
func (a *acker) settle(tag uint64, ack bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.state[tag]; !ok {
		return
	}
	if ack {
		a.state[tag] = settleAck
	} else {
		a.state[tag] = settleRequeue
	}
	select {
	case a.kick <- struct{}{}:
	default:
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
		// Gather what finishes within the interval into one ack.
		select {
		case <-a.done:
			a.flush()
			return
		case <-time.After(AckInterval):
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
		st := a.state[tag]
		if st == 0 {
			break
		}
		a.pending = a.pending[1:]
		delete(a.state, tag)
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
