// Package telemetry is the observability the services share: OpenTelemetry
// tracing set up from the standard OTEL_* variables, W3C trace context
// carried in HTTP headers, AMQP headers and outbox rows, trace and span ids
// on every log line that has a context, Prometheus metrics with their
// /metrics handler, and a page that draws one trace from Jaeger's query API.
//
// With neither OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_ variant) nor
// OTEL_TRACES_EXPORTER set, Setup installs nothing but the propagator: the
// global tracer provider stays OpenTelemetry's no-op one, no span is
// recorded and nothing is exported. Trace context that arrives in a request
// or a message is still passed on, so a caller's trace id stays in the logs.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of the spans this package starts.
const Scope = "github.com/checkout-demo/checkout/internal/telemetry"

var enabled atomic.Bool

// Enabled reports whether Setup installed a recording tracer provider.
// Instrumentation that costs something even when its spans are dropped (the
// pgx tracer) is only installed when it is.
func Enabled() bool { return enabled.Load() }

// Setup configures tracing for service from the environment:
//
//   - OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: no export.
//   - OTEL_TRACES_EXPORTER=otlp, or OTEL_EXPORTER_OTLP_ENDPOINT /
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set: export with OTLP over
//     OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, http/protobuf (the default) or
//     grpc. The exporter reads its own OTEL_EXPORTER_OTLP_* variables
//     (endpoint, headers, timeout, insecure).
//   - Neither: no export (unlike the specification's default of otlp, so
//     that a service started without configuration sends nothing anywhere).
//
// OTEL_SERVICE_NAME (default service) and OTEL_RESOURCE_ATTRIBUTES name the
// resource; OTEL_TRACES_SAMPLER(_ARG) choose the sampler (default
// parentbased_always_on) and OTEL_BSP_* tune the batching. The propagator
// is always W3C trace context and baggage.
//
// The returned function flushes and stops the exporter; call it at
// shutdown with a fresh context. It is never nil.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	exp, err := exporterFromEnv(ctx)
	if err != nil || exp == nil {
		return func(context.Context) error { return nil }, err
	}
	return install(ctx, service, sdktrace.WithBatcher(exp))
}

// SetupForTest installs a tracer provider for service that hands every
// span to exp as it ends (tracetest.NewInMemoryExporter, say), for tests
// that run a service in-process. The provider is global: such tests must
// not run in parallel with others that trace.
func SetupForTest(service string, exp sdktrace.SpanExporter) (shutdown func(context.Context) error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	shutdown, _ = install(context.Background(), service, sdktrace.WithSyncer(exp))
	return shutdown
}

func install(ctx context.Context, service string, processor sdktrace.TracerProviderOption) (func(context.Context) error, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return func(context.Context) error { return nil }, fmt.Errorf("telemetry resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(processor, sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	enabled.Store(true)
	return func(ctx context.Context) error {
		enabled.Store(false)
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("telemetry shutdown: %w", err)
		}
		return nil
	}, nil
}

func exporterFromEnv(ctx context.Context) (sdktrace.SpanExporter, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	switch name := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); name {
	case "none":
		return nil, nil
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", name)
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	return exp, nil
}

// Tracer is the project's tracer (of the global provider Setup installs).
func Tracer() trace.Tracer { return otel.GetTracerProvider().Tracer(Scope) }

// EndSpan records err on span (when not nil) and ends it.
func EndSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// TraceID returns the trace id of the span in ctx as 32 hex digits, or ""
// when ctx carries none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
