package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNotConnected is returned by operations that need the broker while it is away.
var ErrNotConnected = errors.New("rabbitmq: not connected")

// Broker keeps one AMQP connection alive: it dials until the broker answers,
// declares the exchange on every connect, and dials again when the connection
// drops. Publishers and consumers take the current connection from it and open
// their own channels.
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

	mu        sync.Mutex
	conn      *amqp.Connection
	connected chan struct{} // closed while conn is usable; replaced when it drops
	onConnect []func()
}

// NewBroker returns a broker for url. Call Run to connect.
func NewBroker(url string, log *slog.Logger) *Broker {
	return &Broker{url: url, log: log, connected: make(chan struct{})}
}

// OnConnect registers f to run after every successful (re)connect, e.g. to
// wake an outbox relay. f must not block.
func (b *Broker) OnConnect(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onConnect = append(b.onConnect, f)
}

// Run connects and keeps the connection alive until ctx is done, then closes it.
func (b *Broker) Run(ctx context.Context) {
	backoff := Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		conn, err := b.dial()
		if err != nil {
			d := backoff.Delay(attempt)
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
		b.mu.Lock()
		b.conn = conn
		close(b.connected)
		hooks := append([]func(){}, b.onConnect...)
		b.mu.Unlock()
		b.log.Info("rabbitmq connected")
		for _, f := range hooks {
			f()
		}

		select {
		case <-ctx.Done():
			b.drop()
			_ = conn.Close()
			return
		case err := <-closed:
			b.drop()
			b.log.Warn("rabbitmq connection lost", "err", err)
		}
	}
}

func (b *Broker) dial() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(b.url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "checkout"},
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = DeclareExchange(ch)
		_ = ch.Close()
	}
	if err != nil {
		_ = conn.Close()
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
		b.conn = nil
		b.connected = make(chan struct{})
	}
}

// Connected reports whether the broker connection is up.
func (b *Broker) Connected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conn != nil && !b.conn.IsClosed()
}

// Channel opens a channel on the current connection, waiting for one until
// ctx is done.
func (b *Broker) Channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		b.mu.Lock()
		conn, connected := b.conn, b.connected
		b.mu.Unlock()
		if conn != nil {
			ch, err := conn.Channel()
			if err == nil {
				return ch, nil
			}
			if !conn.IsClosed() {
				return nil, fmt.Errorf("open channel: %w", err)
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

// Backoff is exponential backoff with full jitter.
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

// Check is a health check: nil while connected.
func (b *Broker) Check(context.Context) error {
	if !b.Connected() {
		return ErrNotConnected
	}
	return nil
}
