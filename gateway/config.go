package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port              string        `envconfig:"PORT" default:"9000"`
	OrderServiceURL   string        `envconfig:"ORDER_SERVICE_URL" default:"http://localhost:8001"`
	PaymentServiceURL string        `envconfig:"PAYMENT_SERVICE_URL" default:"http://localhost:8002"`
	EmailServiceURL   string        `envconfig:"EMAIL_SERVICE_URL" default:"http://localhost:8003"`
	UpstreamTimeout   time.Duration `envconfig:"UPSTREAM_TIMEOUT" default:"5s"`
	HealthTimeout     time.Duration `envconfig:"HEALTH_TIMEOUT" default:"1s"`
	ShutdownTimeout   time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info"`

	// UpstreamAttempts bounds the calls of one request whose outcome stays
	// unknown (a checkout is retried with the same idempotency key).
	UpstreamAttempts int `envconfig:"UPSTREAM_ATTEMPTS" default:"3"`
	// BreakerFailures timed-out calls or dropped answers in a row open the
	// circuit breaker to the order service; BreakerOpenTimeout later it
	// lets one call through to see whether the order service is back.
	BreakerFailures    int           `envconfig:"BREAKER_FAILURES" default:"5"`
	BreakerOpenTimeout time.Duration `envconfig:"BREAKER_OPEN_TIMEOUT" default:"5s"`
}
