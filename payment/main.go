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
	"sync/atomic"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
	"github.com/checkout-demo/checkout/payment/migrations"
)

// Queue is the payment service's queue (events.QueuePayment): orders to
// charge and orders the saga cancelled.
const Queue = "payment.order-created"

func main() {
	var cfg Config
	web.Main("payment", &cfg,
		func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) },
		func() []web.Command {
			return []web.Command{web.HealthcheckCommand(cfg.Port), worker.DeadLetters(cfg.AMQPURL, Queue)}
		})
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

	metrics, stopTelemetry, err := web.Telemetry(ctx, log, "payment", cfg.ShutdownTimeout)
	if err != nil {
		return err
	}
	defer stopTelemetry()

	db, err := postgres.Open(cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer db.Close()
	store := &Store{pool: db.Pool, ready: db.Ready}

	broker := events.NewBroker(cfg.AMQPURL, log)
	broker.Name = "payment"
	pub := events.NewPublisher(broker)
	pub.Metrics = metrics
	defer pub.Close()
	relay := outbox.NewRelay(db.Pool, pub, log)
	relay.Poll, relay.Batch, relay.Linger, relay.CleanupInterval, relay.Retention, relay.InboxRetention = cfg.OutboxPoll, cfg.OutboxBatch, cfg.OutboxLinger, cfg.OutboxCleanup, cfg.OutboxRetention, cfg.InboxRetention
	provider := Provider{Delay: cfg.PaymentDelay, MaxAmount: maxAmount, FailureRate: cfg.PaymentFailureRate, Ledger: db.Pool}
	c := &charger{log: log, store: store, provider: provider, relay: relay, metrics: metrics}
	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: Queue, Bindings: events.QueueBindings(Queue),
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout, Metrics: metrics,
		Unavailable: postgres.IsTransient,
	}, c.handle, log)

	bg := &worker.Background{Log: log, Broker: broker, DB: db, Migrations: migrations.FS,
		Relay: relay, Consumer: consumer, FlushTimeout: cfg.ShutdownTimeout, Metrics: metrics}
	ctx = bg.Start(ctx)
	defer bg.Stop()

	// The reconciler finishes the charges a crash or a failing database
	// left between their intent and their result: at start, then every
	// PAYMENT_RECONCILE_INTERVAL. A payment younger than one handler
	// attempt may still be under way and is left to its handler.
	reconcileCtx, stopReconcile := context.WithCancel(ctx)
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		select {
		case <-db.Prepared():
			c.reconcile(reconcileCtx, cfg.ReconcileInterval, cfg.HandlerTimeout)
		case <-reconcileCtx.Done():
		}
	}()
	defer func() { stopReconcile(); <-reconciled }()

	var stopping atomic.Bool
	health := web.Health{
		Log:      log,
		Service:  "payment",
		Ready:    map[string]web.Check{"postgres": db.Ping, "rabbitmq": broker.Check, "consumer": consumer.Check},
		Stopping: stopping.Load,
	}
	return bg.Result(web.ListenAndServe(ctx, log, net.JoinHostPort(cfg.ListenHost, cfg.Port), NewServer(log, metrics, store, health), cfg.ShutdownTimeout, &stopping, listening,
		"payment_delay", cfg.PaymentDelay.String(), "max_amount", maxAmount.String(), "failure_rate", cfg.PaymentFailureRate))
}
