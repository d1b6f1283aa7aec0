// Command payment is the payment service: it takes each OrderCreated, charges
// the order once through a (simulated) provider, and announces the result
// through its outbox.
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
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/payment/migrations"
)

// Queue is the payment service's queue of OrderCreated events.
const Queue = "payment.order-created"

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
		if err := events.DeadLetterCommand(ctx, os.Args[2:], cfg.AMQPURL, Queue, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "dlq:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}

// run starts the service and blocks until ctx is done, then stops taking
// deliveries, lets the running payments finish and acks them, flushes the
// outbox and closes everything.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "payment")
	maxAmount, err := money.Parse(cfg.PaymentMaxAmount)
	if err != nil {
		return fmt.Errorf("PAYMENT_MAX_AMOUNT: %w", err)
	}
	if cfg.PaymentFailureRate < 0 || cfg.PaymentFailureRate > 1 {
		return fmt.Errorf("PAYMENT_FAILURE_RATE must be between 0 and 1, got %v", cfg.PaymentFailureRate)
	}

	db, err := postgres.Open(cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer db.Close()
	store := &Store{pool: db.Pool, ready: db.Ready}

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

	provider := Provider{Delay: cfg.PaymentDelay, MaxAmount: maxAmount, FailureRate: cfg.PaymentFailureRate}
	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: Queue, Bindings: []string{events.RouteOrderCreated},
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout,
		Unavailable: postgres.IsUnavailable,
	}, handleOrderCreated(log, store, provider, relay), log)

	// The relay and the consumer start once the database is migrated; the
	// consumer stops first at shutdown, the relay after a last flush.
	consumerCtx, stopConsumer := context.WithCancel(bgCtx)
	defer stopConsumer()
	relayCtx, stopRelay := context.WithCancel(bgCtx)
	defer stopRelay()
	consumerDone, relayDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(relayDone)
		if db.Prepare(relayCtx, migrations.FS, log) == nil {
			relay.Run(relayCtx)
		}
	}()
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
		Service:  "payment",
		Ready:    map[string]web.Check{"postgres": db.Ping, "rabbitmq": broker.Check},
		Stopping: stopping.Load,
	}
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	log.Info("listening", "addr", ln.Addr().String(), "payment_delay", cfg.PaymentDelay.String(),
		"max_amount", maxAmount.String(), "failure_rate", cfg.PaymentFailureRate)
	serveErr := web.Serve(ctx, web.NewServer(NewServer(log, store, health), log), ln, cfg.ShutdownTimeout)
	stopping.Store(true)
	log.Info("shutting down")

	stopConsumer()
	<-consumerDone
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
