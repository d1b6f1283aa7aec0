package events

import (
	"github.com/checkout-demo/checkout/internal/backoff"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
)

// Headers the consumer sets on messages it retries or dead-letters, and a
// replay on those it moves back.
const (
	HeaderAttempt       = "x-attempt"                // failed attempts so far
	HeaderRoutingKey    = "x-original-routing-key"   // the routing key the event was published with
	HeaderError         = "x-error"                  // why the last attempt failed
	HeaderFailedAt      = "x-failed-at"              // when it was dead-lettered (RFC 3339)
	HeaderDeadLetterFor = "x-dead-letter-from-queue" // the queue it came from
	HeaderUnavailable   = "x-unavailable-retries"    // retries because a dependency was away
	HeaderReplayed      = "x-replayed"               // times it was replayed from the dead-letter queue
)

// ConsumerConfig describes one queue and how its messages are handled.
type ConsumerConfig struct {
	Queue    string   // durable queue name, e.g. "payment.order-created"
	Bindings []string // routing keys bound to the exchange

	Prefetch    int // unacked messages the broker hands out at once
	Concurrency int // handlers running at once

	// MaxAttempts bounds how often a failing message is tried before it goes
	// to the dead-letter queue <Queue>.dlq.
	MaxAttempts int
	// RetryBase and RetryMax shape the exponential backoff between attempts.
	RetryBase, RetryMax time.Duration
	// HandlerTimeout bounds one attempt.
	HandlerTimeout time.Duration
	// Unavailable, when set, tells errors that mean a dependency is away
	// (the database restarts, SMTP is down). Such a failure is retried with
	// backoff but does not count as an attempt: an outage must not send
	// good messages to the dead-letter queue.
	Unavailable func(error) bool
	// Metrics, when set, counts the deliveries by outcome and times the
	// handler (checkout_consumer_messages_total and _handling_duration_seconds).
	Metrics *telemetry.Metrics
}

// Handlers is the most handlers a consumer with this configuration runs at
// once: Concurrency, and never more than the Prefetch the broker hands out.
func (c ConsumerConfig) Handlers() int {
	c.defaults()
	return min(c.Prefetch, c.Concurrency)
}

func (c *ConsumerConfig) defaults() {
	if c.Prefetch <= 0 {
		c.Prefetch = 50
	}
	if c.Concurrency <= 0 {
		c.Concurrency = c.Prefetch
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 30 * time.Second
	}
}

// DeadLetterQueue is the name of q's dead-letter queue.
func DeadLetterQueue(q string) string { return q + ".dlq" }

// RetryQueue is the name of q's delay queue for the given retry (1-based).
// Each retry level has its own queue so that a long delay never holds up a
// short one: RabbitMQ only expires messages at the head of a queue.
func RetryQueue(q string, retry int) string { return q + ".retry." + strconv.Itoa(retry) }

// Delivery is one message handed to a handler.
type Delivery struct {
	amqp.Delivery
	// Attempt is 1 on the first try.
	Attempt int
	// PublishedBy is the RabbitMQ user that published the event, as the
	// broker validated it (its user_id, also after this service moved it to
	// a retry queue and back); empty when the publisher set none.
	PublishedBy string
}

// EventRoutingKey is the routing key the event was published with, also
// after a retry brought it back through the default exchange.
func (d Delivery) EventRoutingKey() string {
	if k, ok := d.Headers[HeaderRoutingKey].(string); ok && k != "" {
		return k
	}
	return d.RoutingKey
}

// Handler applies one message. Returning nil acks it; an error retries it
// with backoff, or dead-letters it at once when wrapped with Permanent.
type Handler func(ctx context.Context, d Delivery) error

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks an error that retrying cannot fix, such as a body that
// cannot be decoded: the message goes to the dead-letter queue at once.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type duplicateKey struct{}

// MarkDuplicate tells the consumer running the handler of ctx that its
// delivery was a repeat with no effect (the inbox had its event id): it is
// counted as a duplicate rather than as handled. Outside a handler it does
// nothing.
func MarkDuplicate(ctx context.Context) {
	if dup, ok := ctx.Value(duplicateKey{}).(*atomic.Bool); ok {
		dup.Store(true)
	}
}

// Consumer consumes one queue with bounded concurrency and acks a message
// only after its handler returned. It re-declares its topology and resumes
// after the broker connection comes back.
type Consumer struct {
	broker  *Broker
	cfg     ConsumerConfig
	handler Handler
	log     *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	consuming atomic.Bool
}

// NewConsumer returns a consumer; Run starts it.
func NewConsumer(b *Broker, cfg ConsumerConfig, h Handler, log *slog.Logger) *Consumer {
	cfg.defaults()
	return &Consumer{broker: b, cfg: cfg, handler: h, log: log.With("queue", cfg.Queue), ready: make(chan struct{})}
}

// Queue is the name of the queue it consumes.
func (c *Consumer) Queue() string { return c.cfg.Queue }

// Ready is closed once the consumer's queues are declared and it consumes.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

// Check is a health check: nil while the consumer consumes its queue.
func (c *Consumer) Check(context.Context) error {
	if !c.consuming.Load() {
		return errors.New("not consuming")
	}
	return nil
}

// Run consumes until ctx is done. On shutdown it stops taking deliveries,
// hands back the ones it had not started, lets the running handlers finish
// (up to HandlerTimeout) and acks them.
func (c *Consumer) Run(ctx context.Context) {
	sem := make(chan struct{}, c.cfg.Concurrency)
	var inflight sync.WaitGroup
	// Handlers get HandlerTimeout, and moving a failed message 10 s more.
	defer waitTimeout(&inflight, c.cfg.HandlerTimeout+10*time.Second)
	bo := backoff.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		start := time.Now()
		err := c.consume(ctx, sem, &inflight)
		if ctx.Err() != nil {
			return
		}
		attempt = resumeAttempt(attempt, time.Since(start))
		d := bo.Delay(attempt)
		if err != nil {
			c.log.Warn("consumer stopped, resuming", "err", err, "retry_in", d.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// HealthyPeriod is how long a channel must have consumed for the next
// resubscribe to start again from the shortest backoff: late in a process's
// life, one dropped channel must not wait as long as the tenth failure in a
// row.
const HealthyPeriod = 30 * time.Second

// resumeAttempt is the backoff attempt for a resubscribe after a channel
// that lived ranFor.
func resumeAttempt(attempt int, ranFor time.Duration) int {
	if ranFor >= HealthyPeriod {
		return 0
	}
	return attempt
}

// consume runs one channel's life: declare, consume, dispatch.
func (c *Consumer) consume(ctx context.Context, sem chan struct{}, inflight *sync.WaitGroup) error {
	ch, err := c.broker.Channel(ctx)
	if err != nil {
		return err
	}
	conn := c.broker.consumeConn()
	if conn == nil {
		_ = ch.Close()
		return ErrNotConnected
	}
	defer func() { _ = bounded(context.Background(), conn, ch.Close) }()
	spec := QueueSpec{Name: c.cfg.Queue, Bindings: c.cfg.Bindings}
	if err := c.broker.declareOn(ctx, conn, []QueueSpec{spec}); err != nil {
		return err
	}
	if err := bounded(ctx, conn, func() error { return ch.Qos(c.cfg.Prefetch, 0, false) }); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	// Retries and dead letters are published on a channel of their own in
	// confirm mode: the original is acked only once its copy is safe.
	repub, err := c.broker.PublishChannel(ctx)
	if err != nil {
		return err
	}
	defer repub.Close()
	pubConn := c.broker.publishConn()
	if pubConn == nil {
		return ErrNotConnected
	}
	if err := bounded(ctx, pubConn, func() error { return repub.Confirm(false) }); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	// At most one move per handler is in flight, so the returns buffer never
	// fills (a full one would stall the connection's reader).
	r := &republisher{broker: c.broker, conn: pubConn, spec: spec, ch: repub, returns: repub.NotifyReturn(make(chan amqp.Return, c.cfg.Concurrency+1)), returned: map[string]bool{}}

	tag := fmt.Sprintf("%s-%d", c.cfg.Queue, time.Now().UnixNano())
	var deliveries <-chan amqp.Delivery
	if err := bounded(ctx, conn, func() (err error) {
		deliveries, err = ch.ConsumeWithContext(context.WithoutCancel(ctx), c.cfg.Queue, tag, false, false, false, false, nil)
		return err
	}); err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	c.readyOnce.Do(func() { close(c.ready) })
	c.consuming.Store(true)
	defer c.consuming.Store(false)
	c.log.Info("consuming", "prefetch", c.cfg.Prefetch, "concurrency", c.cfg.Concurrency)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	repubClosed := repub.NotifyClose(make(chan *amqp.Error, 1))

	// Handlers of this channel's deliveries run under chCtx: once the
	// channel is gone their deliveries go back to the queue (to this
	// consumer's next channel or to a sibling), and a handler that went on
	// would race its own redelivery to the same effect. A shutdown does not
	// cancel it: running handlers may finish and be acked.
	chCtx, cancelCh := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelCh(errors.New("delivery channel closed"))
	acks := newAcker(ch, c.cfg.Prefetch)
	// Registered after ch.Close, so it runs before: the last acks go out
	// on the open channel.
	defer acks.stop()

	for {
		select {
		case <-ctx.Done():
			_ = ch.Cancel(tag, false)
			// Deliveries the broker sent before the cancel: hand them back.
			for d := range deliveries {
				acks.add(d.DeliveryTag)
				acks.settle(d.DeliveryTag, false)
			}
			waitTimeout(inflight, c.cfg.HandlerTimeout+10*time.Second)
			return nil
		case err := <-closed:
			return fmt.Errorf("channel closed: %v", err)
		case err := <-repubClosed:
			// Failed messages could not be moved any more: start over.
			return fmt.Errorf("move channel closed: %v", err)
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("deliveries closed")
			}
			acks.add(d.DeliveryTag)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				acks.settle(d.DeliveryTag, false)
				continue
			}
			inflight.Add(1)
			go func() {
				defer func() { <-sem; inflight.Done() }()
				c.handle(ctx, chCtx, r, acks, d)
			}()
		}
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func (c *Consumer) handle(ctx, chCtx context.Context, r *republisher, acks *acker, amqpD amqp.Delivery) {
	d := Delivery{Delivery: amqpD, Attempt: attemptOf(amqpD.Headers) + 1, PublishedBy: publishedBy(amqpD, c.broker.user)}
	// The logger with the message's attributes is built only when a line
	// is logged: a message handled well logs nothing here.
	log := func() *slog.Logger {
		return c.log.With("event_id", d.MessageId, "event_type", d.Type, "attempt", d.Attempt)
	}
	// The handling continues the producer's trace (or the mover's, for a
	// retry); its log lines carry the trace id.
	tctx, span := amqptel.StartConsume(chCtx, c.cfg.Queue, &amqpD)
	var err error
	defer func() { telemetry.EndSpan(span, err) }()

	// A shutdown does not cancel a running handler: it is given
	// HandlerTimeout to finish so its work can be acked. The loss of its
	// channel does.
	var dup atomic.Bool
	hctx, cancel := context.WithTimeout(context.WithValue(tctx, duplicateKey{}, &dup), c.cfg.HandlerTimeout)
	start := time.Now()
	err = c.safeHandle(hctx, d)
	took := time.Since(start)
	// A handler that ran out of its own time is not waiting for an absent
	// dependency: that attempt counts, so a message that is always too slow
	// ends in the dead-letter queue instead of being retried forever.
	timedOut := hctx.Err() != nil
	cancel()
	if chCtx.Err() != nil {
		// The delivery is back in the queue already: neither ack nor move.
		log().WarnContext(tctx, "delivery channel closed while handling; the message is redelivered", "err", err)
		return
	}
	if err == nil {
		acks.settle(d.DeliveryTag, true)
		outcome := telemetry.OutcomeHandled
		if dup.Load() {
			outcome = telemetry.OutcomeDuplicate
		}
		c.cfg.Metrics.ConsumerMessage(c.cfg.Queue, outcome, took)
		return
	}

	dlq := DeadLetterQueue(c.cfg.Queue)
	mv := move{reason: err.Error(), attempts: d.Attempt, unavailable: headerInt(d.Headers, HeaderUnavailable)}
	unavailable := c.unavailable(err) && !timedOut
	bo := backoff.Backoff{Base: c.cfg.RetryBase, Max: c.cfg.RetryMax}
	switch {
	case IsPermanent(err) || (d.Attempt >= c.cfg.MaxAttempts && !unavailable):
		mv.queue = dlq
		log().ErrorContext(tctx, "message dead-lettered", "err", err, "dead_letter_queue", dlq)
	case unavailable:
		// Not the message's fault: try again later without using up an attempt.
		mv.attempts, mv.unavailable = d.Attempt-1, mv.unavailable+1
		mv.queue = RetryQueue(c.cfg.Queue, min(mv.unavailable, RetryLevels))
		mv.delay = bo.Delay(mv.unavailable - 1)
		log().WarnContext(tctx, "dependency unavailable, retrying", "err", err, "retry_in", mv.delay.String())
	default:
		mv.queue = RetryQueue(c.cfg.Queue, min(d.Attempt, RetryLevels))
		mv.delay = bo.Delay(d.Attempt - 1)
		log().WarnContext(tctx, "handler failed, retrying", "err", err, "retry_in", mv.delay.String())
	}
	outcome := telemetry.OutcomeRetried
	if mv.queue == dlq {
		outcome = telemetry.OutcomeDeadLettered
	}
	// The move publishes under the attempt's span, so the retry (or the
	// dead letter) stays in the trace.
	pctx, cancelPub := context.WithTimeout(trace.ContextWithSpan(context.WithoutCancel(ctx), span), CallTimeout)
	defer cancelPub()
	// The move is bounded as a whole: a write to a stalled socket blocks
	// whatever pctx says.
	if err := bounded(pctx, r.conn, func() error { return r.publish(pctx, d, mv, c.cfg.Queue) }); err != nil {
		if errors.Is(err, ErrUnroutable) {
			// The retry or dead-letter queue is gone (deleted by hand):
			// declare the topology again, or the message would bounce
			// between the queue and this handler.
			if derr := r.broker.Declare(pctx, r.spec); derr != nil {
				log().WarnContext(tctx, "declare topology again", "err", derr)
			}
		}
		// The copy is not safe: hand the original back instead (it is
		// tried again, so it counts as retried).
		log().WarnContext(tctx, "could not move message, requeueing", "err", err, "to", mv.queue)
		acks.settle(d.DeliveryTag, false)
		c.cfg.Metrics.ConsumerMessage(c.cfg.Queue, telemetry.OutcomeRetried, took)
		return
	}
	acks.settle(d.DeliveryTag, true)
	c.cfg.Metrics.ConsumerMessage(c.cfg.Queue, outcome, took)
}

func (c *Consumer) safeHandle(ctx context.Context, d Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return c.handler(ctx, d)
}

func (c *Consumer) unavailable(err error) bool {
	return c.cfg.Unavailable != nil && c.cfg.Unavailable(err)
}

func attemptOf(h amqp.Table) int { return headerInt(h, HeaderAttempt) }

// maxHeaderCount bounds the counts read from headers: they come from the
// wire, and anyone who can publish can set them.
const maxHeaderCount = 1 << 16

// headerInt reads a count from a header, clamped to [0, maxHeaderCount]: a
// negative count would name a retry queue that does not exist, and a huge
// one would overflow.
func headerInt(h amqp.Table, key string) int {
	var n int64
	switch v := h[key].(type) {
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case int:
		n = int64(v)
	}
	return int(min(max(n, 0), maxHeaderCount))
}

// republisher moves a message to a retry or dead-letter queue and waits for
// the broker's confirm. Moves run concurrently (many handlers can fail at
// once when a dependency goes away). A move the broker returned (its queue
// was deleted) is a failure: the broker sends the return before the
// confirm, so after its confirm a move drains the returns received so far
// and looks for its own message id among them.
type republisher struct {
	broker  *Broker
	conn    *amqp.Connection // the connection ch is on
	spec    QueueSpec        // the queue it moves messages of, declared again when a move comes back
	ch      *amqp.Channel
	returns <-chan amqp.Return

	mu       sync.Mutex
	returned map[string]bool
}

func (r *republisher) wasReturned(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for drained := false; !drained; {
		select {
		case ret, ok := <-r.returns:
			if !ok {
				drained = true
				break
			}
			r.returned[ret.MessageId] = true
		default:
			drained = true
		}
	}
	if r.returned[id] {
		delete(r.returned, id)
		return true
	}
	return false
}

// move says where a failed message goes and what travels with it.
type move struct {
	queue       string
	reason      string
	attempts    int // failed attempts that count towards MaxAttempts
	unavailable int // retries because a dependency was away
	delay       time.Duration
}

func (r *republisher) publish(ctx context.Context, d Delivery, mv move, from string) (err error) {
	queue, pub := mv.queue, republishing(d.Delivery, r.broker.user)
	headers := pub.Headers
	headers[HeaderAttempt] = int32(mv.attempts)
	headers[HeaderUnavailable] = int32(mv.unavailable)
	headers[HeaderRoutingKey] = d.EventRoutingKey()
	headers[HeaderError] = truncate(mv.reason, 1000)
	headers[HeaderPublishedBy] = d.PublishedBy
	if queue == DeadLetterQueue(from) {
		headers[HeaderFailedAt] = time.Now().UTC().Format(time.RFC3339)
		headers[HeaderDeadLetterFor] = from
	} else {
		pub.Expiration = strconv.FormatInt(max(mv.delay.Milliseconds(), 1), 10)
	}
	// The copy carries the failed attempt's context (replacing the
	// traceparent it came with).
	ctx, span := amqptel.StartPublish(ctx, "", queue, &pub)
	defer func() { telemetry.EndSpan(span, err) }()
	if err = publishOne(ctx, r.ch, outgoing{key: queue, pub: pub}); err != nil {
		return err
	}
	if r.wasReturned(d.MessageId) {
		return fmt.Errorf("%w: queue %s", ErrUnroutable, queue)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
