package worker

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
	"github.com/checkout-demo/checkout/internal/web"
)

// Settings are what a service's Config says of the parts Open builds; the
// fields are named as the services' Configs name them.
type Settings struct {
	Port, ListenHost    string
	LogLevel, LogFormat string
	AMQPURL             string
	ShutdownTimeout     time.Duration
	// The consumer's (events.ConsumerConfig).
	Prefetch, Concurrency, MaxAttempts  int
	RetryBase, RetryMax, HandlerTimeout time.Duration
	// DatabaseURL, when set, opens the database (at most DBMaxConns
	// connections), prepared with Migrations, and its outbox relay with
	// the settings below.
	DatabaseURL                                                              string
	DBMaxConns                                                               int32
	Migrations                                                               fs.FS
	OutboxPoll, OutboxLinger, OutboxCleanup, OutboxRetention, InboxRetention time.Duration
	OutboxBatch                                                              int
	// Vacuum is the service's own tables that churn (outbox.Relay.Vacuum).
	Vacuum []string
}

// Service is a service's work besides requests: its log and metrics, the
// broker connection and publisher, the database and the outbox relay (with
// a DatabaseURL), the consumer, and the loops that need the database,
// started and stopped in the order a graceful shutdown needs.
type Service struct {
	Log       *slog.Logger
	Metrics   *telemetry.Metrics
	Broker    *events.Broker
	Publisher *events.Publisher
	DB        *postgres.DB
	Relay     *outbox.Relay
	// Consumer is the one Consume made, if any.
	Consumer *events.Consumer
	// Checks are run once the migrations applied, before the database
	// counts as ready; one that fails but by the database's absence ends
	// the service (postgres.DB.Prepare).
	Checks []func(context.Context) error
	// Loops run once the database is ready, until the service stops;
	// they are stopped first.
	Loops []func(context.Context)
	// Stopping is set as the HTTP server begins to shut down
	// (web.Health.Stopping).
	Stopping atomic.Bool

	settings                                       Settings
	stopTelemetry                                  func()
	cancel                                         context.CancelFunc // Start's context
	failure                                        atomic.Pointer[error]
	stopLoops, stopBroker, stopRelay, stopConsumer context.CancelFunc
	loopsDone, brokerDone, relayDone, consumerDone chan struct{}
}

// Open builds the service's parts; nothing connects yet (Start). Close it
// after Stop.
func Open(ctx context.Context, service string, stdout io.Writer, s Settings) (*Service, error) {
	log := web.NewLogger(stdout, s.LogLevel, s.LogFormat, service)
	metrics, stopTelemetry, err := web.Telemetry(ctx, log, service, s.ShutdownTimeout)
	if err != nil {
		return nil, err
	}
	svc := &Service{Log: log, Metrics: metrics, settings: s, stopTelemetry: stopTelemetry}
	if s.DatabaseURL != "" {
		if svc.DB, err = postgres.Open(s.DatabaseURL, s.DBMaxConns); err != nil {
			stopTelemetry()
			return nil, err
		}
	}
	svc.Broker = events.NewBroker(s.AMQPURL, log)
	svc.Broker.Name = service
	svc.Publisher = events.NewPublisher(svc.Broker)
	svc.Publisher.Metrics = metrics
	if svc.DB != nil {
		r := outbox.NewRelay(svc.DB.Pool, svc.Publisher, log)
		r.Poll, r.Batch, r.Linger, r.CleanupInterval, r.Retention, r.InboxRetention = s.OutboxPoll, s.OutboxBatch, s.OutboxLinger, s.OutboxCleanup, s.OutboxRetention, s.InboxRetention
		r.Vacuum = s.Vacuum
		svc.Relay = r
	}
	return svc, nil
}

// Consume makes the service's consumer: c names its queue, its bindings
// and, when not the database's absence (postgres.IsTransient), what
// Unavailable is; the rest comes from the Settings.
func (s *Service) Consume(c events.ConsumerConfig, h events.Handler) *events.Consumer {
	c.Prefetch, c.Concurrency, c.MaxAttempts = s.settings.Prefetch, s.settings.Concurrency, s.settings.MaxAttempts
	c.RetryBase, c.RetryMax, c.HandlerTimeout = s.settings.RetryBase, s.settings.RetryMax, s.settings.HandlerTimeout
	c.Metrics = s.Metrics
	if c.Unavailable == nil {
		c.Unavailable = postgres.IsTransient
	}
	s.Consumer = events.NewConsumer(s.Broker, c, h, s.Log)
	return s.Consumer
}

// Start starts the parts: the broker connection at once; the database
// preparation, then the relay; the consumer and the loops once the
// database is ready. They outlive ctx: Stop ends them. The context Start
// returns is ctx, cancelled when a part fails for good (a migration that
// does not apply, a role without the rights it needs, a failed check):
// the service then shuts down and Serve returns why. An absent dependency
// is waited for, never such a failure.
func (s *Service) Start(ctx context.Context) context.Context {
	ctx, s.cancel = context.WithCancel(ctx)
	bg := context.WithoutCancel(ctx)
	var loopsCtx, brokerCtx, relayCtx, consumerCtx context.Context
	loopsCtx, s.stopLoops = context.WithCancel(ctx)
	brokerCtx, s.stopBroker = context.WithCancel(bg)
	relayCtx, s.stopRelay = context.WithCancel(bg)
	consumerCtx, s.stopConsumer = context.WithCancel(bg)
	s.loopsDone, s.brokerDone, s.relayDone, s.consumerDone = make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})

	// Every service declares the whole topology on every connect, before
	// it publishes: whichever starts first, every event reaches every
	// queue that will ever consume it.
	s.Broker.Topology = events.Topology
	if s.Relay != nil {
		s.Metrics.RegisterOutbox(outbox.Stats(s.DB.Pool))
		s.Broker.OnConnect(s.Relay.Wake)
	}
	if s.Consumer != nil {
		s.Metrics.RegisterQueueDepths([]string{events.DeadLetterQueue(s.Consumer.Queue())}, amqptel.QueueDepth(s.Broker.Channel))
	}
	go func() { defer close(s.brokerDone); s.Broker.Run(brokerCtx) }()
	go func() {
		defer close(s.relayDone)
		if s.DB == nil {
			return
		}
		if err := s.DB.Prepare(relayCtx, s.settings.Migrations, s.Log, s.Checks...); err != nil {
			if relayCtx.Err() == nil {
				s.failure.CompareAndSwap(nil, &err)
				s.cancel()
			}
			return
		}
		if s.Relay != nil {
			s.Relay.Run(relayCtx)
		}
	}()
	s.afterPrepare(consumerCtx, s.consumerDone, func(ctx context.Context) {
		if s.Consumer != nil {
			s.Consumer.Run(ctx)
		}
	})
	s.afterPrepare(loopsCtx, s.loopsDone, func(ctx context.Context) {
		var wg sync.WaitGroup
		for _, loop := range s.Loops {
			wg.Go(func() { loop(ctx) })
		}
		wg.Wait()
	})
	return ctx
}

// afterPrepare runs fn in its own goroutine once the database (if any) is
// ready, unless ctx ends first, and closes done when it returns.
func (s *Service) afterPrepare(ctx context.Context, done chan struct{}, fn func(context.Context)) {
	go func() {
		defer close(done)
		if s.DB != nil {
			select {
			case <-s.DB.Prepared():
			case <-ctx.Done():
				return
			}
		}
		fn(ctx)
	}()
}

// Serve serves h on ListenHost:Port until ctx (Start's) is done, then
// stops taking requests and lets those in flight finish (web.ListenAndServe,
// which logs attrs with its "listening" line). It returns the failure that
// ended the service, if one did, else what ended serving.
func (s *Service) Serve(ctx context.Context, h http.Handler, listening func(net.Addr), attrs ...any) error {
	err := web.ListenAndServe(ctx, s.Log, net.JoinHostPort(s.settings.ListenHost, s.settings.Port), h, s.settings.ShutdownTimeout, &s.Stopping, listening, attrs...)
	if cause := s.failure.Load(); cause != nil {
		return *cause
	}
	return err
}

// Stop ends the parts in the order that loses nothing: the loops; the
// consumer stops taking deliveries and finishes (and acks) those in
// flight; the relay finishes its batch; a last flush publishes what the
// last requests and handlers committed; then the broker connection closes.
func (s *Service) Stop() {
	s.stopLoops()
	<-s.loopsDone
	s.stopConsumer()
	<-s.consumerDone
	s.stopRelay()
	<-s.relayDone
	if s.Relay != nil && s.DB.Ready() && s.Broker.Connected() {
		ctx, cancel := context.WithTimeout(context.Background(), s.settings.ShutdownTimeout)
		defer cancel()
		if err := s.Relay.Flush(ctx); err != nil {
			s.Log.Warn("outbox not flushed; the next start publishes the rest", "err", err)
		}
	}
	s.stopBroker()
	<-s.brokerDone
	s.cancel()
	s.Log.Info("stopped")
}

// Close closes the publisher, the database pool and the telemetry, after
// Stop.
func (s *Service) Close() {
	s.Publisher.Close()
	if s.DB != nil {
		s.DB.Close()
	}
	s.stopTelemetry()
}
