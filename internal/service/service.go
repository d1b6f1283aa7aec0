// Package service runs what the four services share around their own
// handlers: the command line (the healthcheck and dlq subcommands), the HTTP
// server, and the background work (broker connection, database preparation,
// outbox relay, consumer), started and stopped in the order a graceful
// shutdown needs.
package service

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
)

// Command is a subcommand of a service binary, such as `order healthcheck`.
type Command struct {
	Name string
	Run  func(ctx context.Context, args []string) error
}

// Main is what every main does: read cfg from the environment, run a
// subcommand when one is named, or else call run with a context that SIGINT
// and SIGTERM cancel. It exits 1 on any error. commands is called after cfg
// is read, so it can use its values.
func Main(name string, cfg any, run func(context.Context) error, commands func() []Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := envconfig.Process("", cfg); err != nil {
		fmt.Fprintln(os.Stderr, name+": config:", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && commands != nil {
		for _, c := range commands() {
			if c.Name == os.Args[1] {
				if err := c.Run(ctx, os.Args[2:]); err != nil {
					fmt.Fprintf(os.Stderr, "%s %s: %v\n", name, c.Name, err)
					os.Exit(1)
				}
				return
			}
		}
	}
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Healthcheck is the `healthcheck` subcommand: it exits 0 when the service
// on this host's port answers /readyz with 200 (for container healthchecks
// in images without a shell).
func Healthcheck(port string) Command {
	return Command{Name: "healthcheck", Run: func(context.Context, []string) error {
		if web.Healthcheck(port) != 0 {
			return fmt.Errorf("not ready")
		}
		return nil
	}}
}

// DeadLetters is the `dlq list|replay` subcommand for the service's queue.
func DeadLetters(amqpURL, queue string) Command {
	return Command{Name: "dlq", Run: func(ctx context.Context, args []string) error {
		return events.DeadLetterCommand(ctx, args, amqpURL, queue, os.Stdout)
	}}
}

// Serve listens on addr (host:port), serves h until ctx is done, then stops taking
// requests and lets those in flight finish within timeout. stopping is set
// as the shutdown begins, so /readyz fails at once. listening, when not nil,
// is told the bound address (tests listen on port 0).
func Serve(ctx context.Context, log *slog.Logger, addr string, h http.Handler, timeout time.Duration,
	stopping *atomic.Bool, listening func(net.Addr), attrs ...any) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	log.Info("listening", append([]any{"addr", ln.Addr().String()}, attrs...)...)
	srv := web.NewServer(h, log)
	srv.RegisterOnShutdown(func() { stopping.Store(true) })
	err = web.Serve(ctx, srv, ln, timeout)
	stopping.Store(true)
	log.Info("shutting down")
	return err
}

// Background is a service's work besides requests. Every part but Log and
// Broker is optional.
type Background struct {
	Log        *slog.Logger
	Broker     *events.Broker
	DB         *postgres.DB
	Migrations fs.FS
	Relay      *outbox.Relay
	Consumer   *events.Consumer
	// FlushTimeout bounds the last outbox flush at shutdown.
	FlushTimeout time.Duration

	stopBroker, stopRelay, stopConsumer context.CancelFunc
	brokerDone, relayDone, consumerDone chan struct{}
}

// Start starts the parts: the broker connection at once; the database
// preparation, then the relay; the consumer once the database is ready.
// They outlive ctx: Stop ends them.
func (b *Background) Start(ctx context.Context) {
	bg := context.WithoutCancel(ctx)
	var brokerCtx, relayCtx, consumerCtx context.Context
	brokerCtx, b.stopBroker = context.WithCancel(bg)
	relayCtx, b.stopRelay = context.WithCancel(bg)
	consumerCtx, b.stopConsumer = context.WithCancel(bg)
	b.brokerDone, b.relayDone, b.consumerDone = make(chan struct{}), make(chan struct{}), make(chan struct{})

	// Every service declares the whole topology on every connect, before
	// it publishes: whichever starts first, every event reaches every
	// queue that will ever consume it.
	b.Broker.Topology = events.Topology
	if b.Relay != nil {
		b.Broker.OnConnect(b.Relay.Wake)
	}
	go func() { defer close(b.brokerDone); b.Broker.Run(brokerCtx) }()
	go func() {
		defer close(b.relayDone)
		if b.DB != nil && b.DB.Prepare(relayCtx, b.Migrations, b.Log) == nil && b.Relay != nil {
			b.Relay.Run(relayCtx)
		}
	}()
	go func() {
		defer close(b.consumerDone)
		if b.Consumer == nil {
			return
		}
		if b.DB != nil {
			select {
			case <-b.DB.Prepared():
			case <-consumerCtx.Done():
				return
			}
		}
		b.Consumer.Run(consumerCtx)
	}()
}

// Stop ends the parts in the order that loses nothing: the consumer stops
// taking deliveries and finishes (and acks) those in flight; the relay
// finishes its batch; a last flush publishes what the last requests and
// handlers committed; then the broker connection closes.
func (b *Background) Stop() {
	b.stopConsumer()
	<-b.consumerDone
	b.stopRelay()
	<-b.relayDone
	if b.Relay != nil && b.DB != nil && b.DB.Ready() && b.Broker.Connected() {
		ctx, cancel := context.WithTimeout(context.Background(), b.FlushTimeout)
		defer cancel()
		if err := b.Relay.Flush(ctx); err != nil {
			b.Log.Warn("outbox not flushed; the next start publishes the rest", "err", err)
		}
	}
	b.stopBroker()
	<-b.brokerDone
	b.Log.Info("stopped")
}
