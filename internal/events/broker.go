package events

import (
	"github.com/checkout-demo/checkout/internal/backoff"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNotConnected is returned by operations that need the broker while it is away.
var ErrNotConnected = errors.New("rabbitmq: not connected")

// Broker keeps a service's AMQP connections alive: it dials until the broker
// answers, declares the exchange on every connect, and dials again when a
// connection drops. Publishers and consumers take the current connection
// from it and open their own channels.
//
// There are two connections, one for consuming (deliveries and acks) and one
// for publishing (events, and consumers' moves to retry and dead-letter
// queues), as RabbitMQ advises: under a memory or disk alarm the broker
// blocks publishing connections, and acks on a blocked connection would not
// get through, so the queues could not drain. Both are up, or the broker
// counts as disconnected and redials both. Each is named after the service
// in the management UI ("order consume", "order publish").
//
// amqp091-go has opt-in automatic recovery (Config.Recovery), but it gives up
// after a bounded number of tries, does not cover the first dial (services
// must start before RabbitMQ), and resolves pending confirms as nacks behind
// the caller's back. One explicit supervisor loop, where every channel user
// re-opens its channel and re-declares its own topology, is easier to reason
// about and to test: the outbox re-publishes what was not confirmed and
// consumers de-duplicate.
type Broker struct {
	url string
	log *slog.Logger
	// Name names the connections in the management UI (set before Run).
	Name string
	// Topology, when set (before Run), is declared on every connect before
	// anything is published: every service declares the whole contract, so
	// an event published before its consumer first started is kept for it.
	Topology []QueueSpec
	// user is the user of url, the validated user_id of what it publishes.
	user string

	mu        sync.Mutex
	conn      *amqp.Connection // consuming
	pubConn   *amqp.Connection // publishing
	blocked   string           // why the broker blocks publishing, or ""
	connected chan struct{}    // closed while both are usable; replaced when one drops
	onConnect []func()
	kept      map[string]bool // queues found to exist with other arguments (warned once)
}

// NewBroker returns a broker for url. Call Run to connect.
func NewBroker(url string, log *slog.Logger) *Broker {
	return &Broker{url: url, user: userOf(url), log: log, Name: "checkout", connected: make(chan struct{})}
}

// OnConnect registers f to run after every successful (re)connect, e.g. to
// wake an outbox relay. f must not block.
func (b *Broker) OnConnect(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onConnect = append(b.onConnect, f)
}

// Run connects and keeps the connections alive until ctx is done, then
// closes them.
func (b *Broker) Run(ctx context.Context) {
	bo := backoff.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		conn, err := b.dial("consume")
		var pubConn *amqp.Connection
		if err == nil {
			if pubConn, err = b.dial("publish"); err != nil {
				_ = conn.Close()
			}
		}
		if err == nil && len(b.Topology) > 0 {
			// Nothing is published before every queue exists.
			dctx, cancel := context.WithTimeout(ctx, 3*CallTimeout)
			if err = b.declareOn(dctx, conn, b.Topology); err != nil {
				_ = pubConn.CloseDeadline(time.Now().Add(time.Second))
				_ = conn.CloseDeadline(time.Now().Add(time.Second))
				err = fmt.Errorf("declare topology: %w", err)
			}
			cancel()
		}
		if err != nil {
			d := bo.Delay(attempt)
			b.log.Warn("rabbitmq unavailable, retrying", "err", err, "retry_in", d.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
				continue
			}
		}
		attempt = -1
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		pubClosed := pubConn.NotifyClose(make(chan *amqp.Error, 1))
		blocked := pubConn.NotifyBlocked(make(chan amqp.Blocking, 4))
		b.mu.Lock()
		b.conn, b.pubConn, b.blocked = conn, pubConn, ""
		close(b.connected)
		hooks := append([]func(){}, b.onConnect...)
		b.mu.Unlock()
		b.log.Info("rabbitmq connected")
		for _, f := range hooks {
			f()
		}

		var lost *amqp.Error
	watch:
		for {
			select {
			case <-ctx.Done():
				b.drop()
				_ = pubConn.Close()
				_ = conn.Close()
				return
			case bl, ok := <-blocked:
				if !ok {
					blocked = nil // closed with the connection; closed or pubClosed follows
					continue
				}
				b.mu.Lock()
				b.blocked = bl.Reason
				if !bl.Active {
					b.blocked = ""
				}
				b.mu.Unlock()
				if bl.Active {
					b.log.Warn("rabbitmq blocks publishing (resource alarm); publishes wait until it lifts", "reason", bl.Reason)
				} else {
					b.log.Info("rabbitmq unblocked publishing")
				}
			case lost = <-closed:
				break watch
			case lost = <-pubClosed:
				break watch
			}
		}
		b.drop()
		_ = pubConn.Close()
		_ = conn.Close()
		b.log.Warn("rabbitmq connection lost", "err", lost)
	}
}

func (b *Broker) dial(role string) (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(b.url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": b.Name + " " + role},
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	err = bounded(ctx, conn, func() error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		if err := DeclareExchange(ch); err != nil {
			return err
		}
		return ch.Close()
	})
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(time.Second))
		return nil, fmt.Errorf("declare exchange: %w", err)
	}
	return conn, nil
}

// DeclareExchange declares the durable topic exchange.
func DeclareExchange(ch *amqp.Channel) error {
	return ch.ExchangeDeclare(Exchange, amqp.ExchangeTopic, true, false, false, false, nil)
}

func (b *Broker) drop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		b.conn, b.pubConn, b.blocked = nil, nil, ""
		b.connected = make(chan struct{})
	}
}

// Connected reports whether both connections are up.
func (b *Broker) Connected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conn != nil && !b.conn.IsClosed() && !b.pubConn.IsClosed()
}

// Channel opens a channel for consuming on the current connection, waiting
// for one until ctx is done.
func (b *Broker) Channel(ctx context.Context) (*amqp.Channel, error) {
	return b.channel(ctx, false)
}

// PublishChannel opens a channel on the publishing connection, waiting for
// one until ctx is done.
func (b *Broker) PublishChannel(ctx context.Context) (*amqp.Channel, error) {
	return b.channel(ctx, true)
}

func (b *Broker) channel(ctx context.Context, publish bool) (*amqp.Channel, error) {
	for {
		b.mu.Lock()
		conn, connected := b.conn, b.connected
		if publish {
			conn = b.pubConn
		}
		b.mu.Unlock()
		if conn != nil {
			ch, err := openChannel(ctx, conn)
			if err == nil {
				return ch, nil
			}
			if !conn.IsClosed() {
				return nil, fmt.Errorf("open channel: %w", err)
			}
			if errors.Is(err, ErrNotConnected) && ctx.Err() != nil {
				return nil, err
			}
			if publish {
				// Publishers do not wait for the next connection: the
				// outbox tries again when the broker is back.
				return nil, fmt.Errorf("%w: %w", ErrNotConnected, err)
			}
			// The connection just closed and Run has not noticed yet.
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrNotConnected, context.Cause(ctx))
			case <-time.After(20 * time.Millisecond):
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotConnected, context.Cause(ctx))
		case <-connected:
		}
	}
}

// Blocked returns why RabbitMQ blocks this service's publishing (a memory
// or disk alarm), or "" when it does not.
func (b *Broker) Blocked() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocked
}

// Check is a health check: nil while connected. A connection the broker
// blocks (a resource alarm) is reported too: events then wait.
func (b *Broker) Check(context.Context) error {
	if !b.Connected() {
		return ErrNotConnected
	}
	if reason := b.Blocked(); reason != "" {
		return fmt.Errorf("rabbitmq blocks publishing: %s", reason)
	}
	return nil
}

// consumeConn is the current consuming connection, or nil.
func (b *Broker) consumeConn() *amqp.Connection {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conn
}

// publishConn is the current publishing connection, or nil.
func (b *Broker) publishConn() *amqp.Connection {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pubConn
}
