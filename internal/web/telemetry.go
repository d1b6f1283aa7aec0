package web

import (
	"context"
	"log/slog"
	"time"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// Telemetry sets up tracing for service from the OTEL_* variables
// (telemetry.Setup: nothing is recorded or exported when none is set) and
// returns the service's metrics and the function to defer, which flushes
// the spans within timeout of a fresh context. Call it before the
// database opens, so that its query tracer is installed.
func Telemetry(ctx context.Context, log *slog.Logger, service string, timeout time.Duration) (*telemetry.Metrics, func(), error) {
	shutdown, err := telemetry.Setup(ctx, service)
	if err != nil {
		return nil, func() {}, err
	}
	return telemetry.NewMetrics(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}, nil
}
