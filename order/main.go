// Command order is the order service: it accepts checkouts from the gateway,
// writes each order and its OrderCreated event in one transaction, publishes
// the events through the outbox relay, and follows the payment saga.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/kelseyhightower/envconfig"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/order/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(web.Healthcheck(cfg.Port))
	}
	if len(os.Args) > 1 && os.Args[1] == "dlq" {
		if err := events.DeadLetterCommand(ctx, os.Args[2:], cfg.AMQPURL, SagaQueue, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "dlq:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

// run starts the service and blocks until ctx is done, then shuts down in
// order: stop taking requests, finish those in flight, stop consumers, flush
// the outbox, close the broker and the pool. listening, when not nil, is
// told the bound address (tests listen on port 0).
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "order")

	db, err := postgres.Open(cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer db.Close()

	// Background work outlives ctx a little: it is stopped step by step below.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()

	broker := events.NewBroker(cfg.AMQPURL, log)
	brokerDone := make(chan struct{})
	go func() { defer close(brokerDone); broker.Run(bgCtx) }()
	pub := events.NewPublisher(broker)
	defer pub.Close()

	relay := outbox.NewRelay(db.Pool, pub, log)
	relay.Poll, relay.Batch = cfg.OutboxPoll, cfg.OutboxBatch
	broker.OnConnect(relay.Wake)
	relayCtx, stopRelay := context.WithCancel(bgCtx)
	defer stopRelay()
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		if db.Prepare(relayCtx, migrations.FS, log) == nil {
			relay.Run(relayCtx)
		}
	}()

	store := &Store{pool: db.Pool, ready: db.Ready}
	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: SagaQueue, Bindings: SagaBindings,
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout,
		Unavailable: postgres.IsUnavailable,
	}, handleSagaEvent(log, store), log)
	consumerCtx, stopConsumer := context.WithCancel(bgCtx)
	defer stopConsumer()
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		select {
		case <-db.Prepared():
			consumer.Run(consumerCtx)
		case <-consumerCtx.Done():
		}
	}()
	var stopping atomic.Bool
	health := web.Health{
		Service:  "order",
		Ready:    map[string]web.Check{"postgres": db.Ping},
		Extra:    map[string]web.Check{"rabbitmq": broker.Check},
		Stopping: stopping.Load,
	}

	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	log.Info("listening", "addr", ln.Addr().String())
	srv := web.NewServer(NewServer(log, store, relay, health), log)
	serveErr := web.Serve(ctx, srv, ln, cfg.ShutdownTimeout)
	stopping.Store(true)
	log.Info("shutting down")

	stopConsumer()
	<-consumerDone
	// Stop the relay (it finishes its batch), then publish what the last
	// requests committed.
	stopRelay()
	<-relayDone
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if db.Ready() && broker.Connected() {
		if err := relay.Flush(flushCtx); err != nil {
			log.Warn("outbox not flushed; the next start publishes the rest", "err", err)
		}
	}
	stopBackground()
	<-brokerDone
	log.Info("stopped")
	return serveErr
}
