package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port string `envconfig:"PORT" default:"8001"`
	// ListenHost is the address the HTTP server binds: loopback unless
	// opened (compose and Kubernetes set 0.0.0.0).
	ListenHost      string        `envconfig:"LISTEN_HOST" default:"127.0.0.1"`
	DatabaseURL     string        `envconfig:"DATABASE_URL" default:"postgres://postgres@localhost:5432/order_db?sslmode=disable"`
	AMQPURL         string        `envconfig:"AMQP_URL" default:"amqp://guest:guest@localhost:5672/"`
	DBMaxConns      int32         `envconfig:"DB_MAX_CONNS" default:"20"`
	Prefetch        int           `envconfig:"CONSUMER_PREFETCH" default:"100"`
	Concurrency     int           `envconfig:"CONSUMER_CONCURRENCY" default:"32"`
	MaxAttempts     int           `envconfig:"CONSUMER_MAX_ATTEMPTS" default:"5"`
	RetryBase       time.Duration `envconfig:"CONSUMER_RETRY_BASE" default:"1s"`
	RetryMax        time.Duration `envconfig:"CONSUMER_RETRY_MAX" default:"30s"`
	HandlerTimeout  time.Duration `envconfig:"CONSUMER_HANDLER_TIMEOUT" default:"30s"`
	OutboxPoll      time.Duration `envconfig:"OUTBOX_POLL_INTERVAL" default:"1s"`
	OutboxBatch     int           `envconfig:"OUTBOX_BATCH_SIZE" default:"200"`
	RequestTimeout  time.Duration `envconfig:"REQUEST_TIMEOUT" default:"4s"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`
	// AccessTokenSecret derives the orders' access tokens (at least 32
	// bytes); empty: a random key kept in the database (access.go).
	AccessTokenSecret string `envconfig:"ACCESS_TOKEN_SECRET"`

	// PaymentTimeout is how long an order may wait for its payment result
	// (or an ended order for its mail step) before the saga asks again;
	// PaymentTries is how many times it asks before it cancels the order.
	PaymentTimeout time.Duration `envconfig:"ORDER_PAYMENT_TIMEOUT" default:"3m"`
	PaymentTries   int           `envconfig:"ORDER_PAYMENT_TRIES" default:"3"`
	// PaymentAMQPUser is the payment service's RabbitMQ user: a payment
	// event published by any other user (RabbitMQ validates the user_id
	// property) is refused. Empty: not checked.
	PaymentAMQPUser string `envconfig:"PAYMENT_AMQP_USER"`
	// AdvanceLinger is the least time between two batches of saga steps
	// (Store.linger).
	AdvanceLinger time.Duration `envconfig:"ADVANCE_LINGER" default:"100ms"`

	// The outbox relay's batching and the clean-up of the outbox and inbox
	// tables (internal/outbox).
	OutboxLinger    time.Duration `envconfig:"OUTBOX_LINGER" default:"50ms"`
	OutboxCleanup   time.Duration `envconfig:"OUTBOX_CLEANUP_INTERVAL" default:"1m"`
	OutboxRetention time.Duration `envconfig:"OUTBOX_RETENTION" default:"24h"`
	InboxRetention  time.Duration `envconfig:"INBOX_RETENTION" default:"168h"`
}
