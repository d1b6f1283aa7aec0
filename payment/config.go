package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port string `envconfig:"PORT" default:"8002"`
	// ListenHost is the address the HTTP server binds: loopback unless
	// opened (compose and Kubernetes set 0.0.0.0).
	ListenHost  string `envconfig:"LISTEN_HOST" default:"127.0.0.1"`
	DatabaseURL string `envconfig:"DATABASE_URL" default:"postgres://postgres@localhost:5432/payment_db?sslmode=disable"`
	AMQPURL     string `envconfig:"AMQP_URL" default:"amqp://guest:guest@localhost:5672/"`
	DBMaxConns  int32  `envconfig:"DB_MAX_CONNS" default:"20"`

	// PaymentDelay simulates the payment provider's latency.
	PaymentDelay time.Duration `envconfig:"PAYMENT_DELAY" default:"1s"`
	// PaymentMaxAmount: orders above it are declined, deterministically.
	PaymentMaxAmount string `envconfig:"PAYMENT_MAX_AMOUNT" default:"10000.00"`
	// PaymentFailureRate declines this share of the other orders (0 to 1),
	// chosen by a hash of the order id so that a retry gets the same answer.
	PaymentFailureRate float64 `envconfig:"PAYMENT_FAILURE_RATE" default:"0"`
	// ReconcileInterval is how often payments left charging (between their
	// intent and their result) are finished by asking the provider again.
	ReconcileInterval time.Duration `envconfig:"PAYMENT_RECONCILE_INTERVAL" default:"30s"`

	Prefetch       int           `envconfig:"CONSUMER_PREFETCH" default:"400"`
	Concurrency    int           `envconfig:"CONSUMER_CONCURRENCY" default:"400"`
	MaxAttempts    int           `envconfig:"CONSUMER_MAX_ATTEMPTS" default:"5"`
	RetryBase      time.Duration `envconfig:"CONSUMER_RETRY_BASE" default:"1s"`
	RetryMax       time.Duration `envconfig:"CONSUMER_RETRY_MAX" default:"30s"`
	HandlerTimeout time.Duration `envconfig:"CONSUMER_HANDLER_TIMEOUT" default:"30s"`

	OutboxPoll      time.Duration `envconfig:"OUTBOX_POLL_INTERVAL" default:"1s"`
	OutboxBatch     int           `envconfig:"OUTBOX_BATCH_SIZE" default:"200"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`

	// The outbox relay's batching and the clean-up of the outbox and inbox
	// tables (internal/outbox).
	OutboxLinger    time.Duration `envconfig:"OUTBOX_LINGER" default:"50ms"`
	OutboxCleanup   time.Duration `envconfig:"OUTBOX_CLEANUP_INTERVAL" default:"1m"`
	OutboxRetention time.Duration `envconfig:"OUTBOX_RETENTION" default:"24h"`
	InboxRetention  time.Duration `envconfig:"INBOX_RETENTION" default:"168h"`
}
