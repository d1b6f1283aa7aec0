package events

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/batch"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
)

// Publisher publishes messages to the exchange on a channel in confirm mode.
// A message counts as published only when the broker confirmed it and did not
// return it as unroutable: messages are mandatory, so an event published
// before any queue is bound to its routing key is not silently dropped but
// stays in the outbox and is tried again.
type Publisher struct {
	broker *Broker

	mu      sync.Mutex
	conn    *amqp.Connection // the connection ch is on
	ch      *amqp.Channel
	returns chan amqp.Return

	// Metrics, when set, counts the broker's answers
	// (checkout_publisher_confirms_total).
	Metrics *telemetry.Metrics

	sent func(int, *amqp.DeferredConfirmation) // publishConfirmed's hook, for tests
}

// NewPublisher returns a publisher on b.
func NewPublisher(b *Broker) *Publisher { return &Publisher{broker: b} }

// MaxBatch is the most messages one Publish call may carry: the channel
// buffers that many returned (unroutable) messages.
const MaxBatch = 1000

// ErrUnroutable is returned for a message no queue was bound to receive.
var ErrUnroutable = errors.New("rabbitmq: message returned as unroutable")

// Result is the outcome of publishing one message.
type Result struct {
	ID  string
	Err error // nil when the broker confirmed the message
}

// Publish sends msgs and waits for the broker's confirms. It returns one
// result per message, in order, also when it fails. A non-nil error means
// the channel failed and no result is trustworthy beyond those with Err ==
// nil; ErrNotConnected means the broker is away or did not answer in time.
func (p *Publisher) Publish(ctx context.Context, msgs []Message) ([]Result, error) {
	if len(msgs) > MaxBatch {
		return nil, fmt.Errorf("publish: %d messages, at most %d at once", len(msgs), MaxBatch)
	}
	// While RabbitMQ blocks publishing (a resource alarm) it reads nothing
	// from the connection: fail fast, as while it is away; the outbox and
	// the callers try again.
	if reason := p.broker.Blocked(); reason != "" {
		err := fmt.Errorf("%w: publishing blocked: %s", ErrNotConnected, reason)
		return failAll(msgs, err), err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.open(ctx); err != nil {
		return failAll(msgs, err), err
	}
	// A write to a stalled socket blocks whatever the context says: the
	// whole batch is bounded, and on timeout the connection is closed.
	ch, returns, sent := p.ch, p.returns, p.sent
	var (
		got       []Result
		gotFailed error
	)
	// got and gotFailed are read only when the call finished: a call given
	// up on may still write them.
	err := bounded(ctx, p.conn, func() error {
		got, gotFailed = publishOn(ctx, ch, returns, p.broker.user, msgs, sent)
		return nil
	})
	results, failed := failAll(msgs, err), err
	if err == nil {
		results, failed = got, gotFailed
	}
	if failed != nil {
		p.closeLocked()
	}
	for _, r := range results {
		p.Metrics.PublishConfirm(confirmResult(r.Err))
	}
	return results, failed
}

// ErrNacked is the result of a message the broker refused (basic.nack).
var ErrNacked = errors.New("rabbitmq: message nacked")

// confirmResult is the label of checkout_publisher_confirms_total for a
// publish that ended with err.
func confirmResult(err error) string {
	switch {
	case err == nil:
		return telemetry.ConfirmAck
	case errors.Is(err, ErrNacked):
		return telemetry.ConfirmNack
	case errors.Is(err, ErrUnroutable):
		return telemetry.ConfirmReturned
	}
	return telemetry.ConfirmError
}

// failAll is one result per message, each failed with err.
func failAll(msgs []Message, err error) []Result {
	results := make([]Result, len(msgs))
	for i, m := range msgs {
		results[i] = Result{ID: m.ID, Err: err}
	}
	return results
}

// publishOn publishes msgs on ch as user (the connection's: RabbitMQ
// validates the user_id, so consumers may trust it).
func publishOn(ctx context.Context, ch *amqp.Channel, returns <-chan amqp.Return, user string, msgs []Message, sent func(int, *amqp.DeferredConfirmation)) ([]Result, error) {
	out := make([]outgoing, len(msgs))
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		out[i] = outgoing{exchange: Exchange, key: m.RoutingKey, pub: amqp.Publishing{ContentType: ContentType,
			DeliveryMode: amqp.Persistent, MessageId: m.ID, Type: m.Type, Timestamp: time.Now(), AppId: "checkout",
			UserId: user, Body: m.Body}}
		// The publish span is a child of the trace the message was
		// written in (the outbox row's context), and its context goes
		// into the headers for the consumer.
		_, spans[i] = amqptel.StartPublish(telemetry.DecodeTraceContext(ctx, m.TraceContext), Exchange, m.RoutingKey, &out[i].pub)
	}
	results, failed := publishConfirmed(ctx, ch, out, sent)
	// The broker sends basic.return before the confirm of the same message, and
	// the client delivers it to the buffered returns channel before it
	// processes the confirm, so every return for this batch is here now.
	markReturned(returns, results)
	for i, span := range spans {
		telemetry.EndSpan(span, results[i].Err)
	}
	return results, failed
}

// outgoing is a message to publish and where to.
type outgoing struct {
	exchange, key string
	pub           amqp.Publishing
}

// publishConfirmed is the one way messages are published here: it sends
// msgs on ch (in confirm mode) as mandatory, so that a message no queue
// receives comes back on the channel's returns (the caller looks there), and
// only then waits for the confirms: a batch waits about one round trip. It
// returns one result per message, ErrNacked for one the broker refused, and
// the channel's failure (a publish not sent, which fails the rest too, or a
// wait that ended). The caller bounds it: a write to a stalled socket blocks
// whatever ctx says. sent, when set, is called after message i was sent
// (a test's hook to cut the connection mid-batch).
func publishConfirmed(ctx context.Context, ch *amqp.Channel, msgs []outgoing, sent func(i int, dc *amqp.DeferredConfirmation)) ([]Result, error) {
	results := make([]Result, len(msgs))
	pending := make([]*amqp.DeferredConfirmation, len(msgs))
	var failed error
	for i, m := range msgs {
		results[i].ID = m.pub.MessageId
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, m.exchange, m.key, true, false, m.pub)
		if err != nil {
			failed = fmt.Errorf("publish %s: %w", m.pub.MessageId, err)
			for j := i; j < len(msgs); j++ {
				results[j] = Result{ID: msgs[j].pub.MessageId, Err: failed}
			}
			break
		}
		pending[i] = dc
		if sent != nil {
			sent(i, dc)
		}
	}
	for i, dc := range pending {
		if dc == nil {
			continue
		}
		ok, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			results[i].Err = fmt.Errorf("wait confirm of %s: %w", results[i].ID, err)
			failed = results[i].Err
		case !ok:
			results[i].Err = ErrNacked
		}
	}
	return results, failed
}

// publishOne publishes m as publishConfirmed does and returns its error.
func publishOne(ctx context.Context, ch *amqp.Channel, m outgoing) error {
	results, _ := publishConfirmed(ctx, ch, []outgoing{m}, nil)
	return results[0].Err
}

// republishing is d to be published again by user (moved to a retry or
// dead-letter queue, or replayed), with a copy of its headers to change.
func republishing(d amqp.Delivery, user string) amqp.Publishing {
	headers := make(amqp.Table, len(d.Headers)+8)
	maps.Copy(headers, d.Headers)
	return amqp.Publishing{Headers: headers, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Type: d.Type, Timestamp: d.Timestamp, AppId: d.AppId, UserId: user, Body: d.Body}
}

// markReturned marks the results of messages the broker returned. It stops
// when the buffer is empty or closed: a channel that shut down mid-batch
// closes its returns channel, and a receive from it must not spin.
func markReturned(returns <-chan amqp.Return, results []Result) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				return
			}
			for i := range results {
				if results[i].ID == r.MessageId && results[i].Err == nil {
					results[i].Err = fmt.Errorf("%w: %s (%s)", ErrUnroutable, r.RoutingKey, r.ReplyText)
				}
			}
		default:
			return
		}
	}
}

func (p *Publisher) open(ctx context.Context) error {
	if p.ch != nil && !p.ch.IsClosed() {
		return nil
	}
	p.closeLocked()
	if !p.broker.Connected() {
		return ErrNotConnected
	}
	ch, err := p.broker.PublishChannel(ctx)
	if err != nil {
		return err
	}
	conn := p.broker.publishConn()
	if conn == nil {
		go ch.Close()
		return ErrNotConnected
	}
	if err := bounded(ctx, conn, func() error { return ch.Confirm(false) }); err != nil {
		go ch.Close()
		return fmt.Errorf("confirm mode: %w", err)
	}
	p.returns = ch.NotifyReturn(make(chan amqp.Return, MaxBatch))
	p.ch, p.conn = ch, conn
	return nil
}

func (p *Publisher) closeLocked() {
	if p.ch != nil {
		// Close waits for the broker's close-ok, which a blocked or dying
		// connection may never send: not while holding the lock.
		go p.ch.Close()
		p.ch = nil
	}
}

// Close closes the publisher's channel.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked()
}

// Batcher lets many goroutines publish one message each and wait for its
// confirm, while the broker sees batches: whatever arrives while a batch
// waits for its confirms goes out together in the next one. A Publisher
// alone serves one caller at a time, so N concurrent callers would wait N
// confirm round trips; through a Batcher they wait about one.
type Batcher struct {
	group batch.Group[Message, struct{}]
}

// NewBatcher returns a Batcher publishing through p. linger is the least
// time between the starts of two batches, as the outbox relay's: after an
// idle spell a message goes at once; while messages keep coming, they
// gather for up to linger and go out together, one write and one confirm
// round trip for many. 0: a batch is whatever arrived while the last one
// waited for its confirms. A batch's publish and confirms are bounded by
// 10 s.
func NewBatcher(p *Publisher, linger time.Duration) *Batcher {
	b := &Batcher{}
	b.group.Max, b.group.Linger, b.group.Timeout = MaxBatch, linger, 10*time.Second
	b.group.Run = func(ctx context.Context, msgs []Message) ([]batch.Result[struct{}], error) {
		results, err := p.Publish(ctx, msgs)
		out := make([]batch.Result[struct{}], len(results))
		for i, r := range results {
			out[i].Err = r.Err
		}
		return out, err
	}
	return b
}

// Publish sends m and waits until the broker confirmed it (nil) or it
// failed. When ctx ends first the message may still be published.
func (b *Batcher) Publish(ctx context.Context, m Message) error {
	if m.TraceContext == "" {
		m.TraceContext = telemetry.EncodeTraceContext(ctx) // the batch is published under another context
	}
	_, err := b.group.Do(ctx, m)
	return err
}
