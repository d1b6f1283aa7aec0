package telemetry

import (
	"context"
	"net/http"
	"time"

	"github.com/felixge/httpsnoop"
	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// quiet are the paths that get no span: the probes and the scrapes would
// drown the traces that matter.
var quiet = map[string]bool{"/livez": true, "/readyz": true, "/health": true, "/metrics": true}

// Middleware returns the outermost middleware of a service's handler: a
// server span per request (otelhttp, continuing the caller's W3C trace
// context; none for the probes and /metrics), named "METHOD /route/{pattern}"
// once chi has routed it, and checkout_http_request_duration_seconds on m
// (nil m: no metrics). Put it outside web.Middleware so the access log line
// carries the trace id, and outside the chi router, which it lends the
// route context it reads the pattern from.
func Middleware(m *Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// chi's router fills a route context found in the request
			// instead of making its own: so the pattern is readable here
			// after the handler returns.
			rctx := chi.RouteContext(r.Context())
			if rctx == nil {
				rctx = chi.NewRouteContext()
				r = r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rctx))
			}
			var res httpsnoop.Metrics
			start := time.Now()
			defer func() {
				route := rctx.RoutePattern()
				if route == "" {
					route = "unmatched"
				}
				if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
					span.SetName(r.Method + " " + route)
					span.SetAttributes(semconv.HTTPRoute(route))
				}
				code := res.Code
				if code == 0 { // the handler panicked before it answered
					code = http.StatusInternalServerError
				}
				m.ObserveHTTP(route, r.Method, code, time.Since(start))
			}()
			res = httpsnoop.CaptureMetrics(next, w, r)
		})
		traced := otelhttp.NewHandler(routed, "http.server",
			otelhttp.WithFilter(func(r *http.Request) bool { return !quiet[r.URL.Path] }),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
		)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if Enabled() {
				traced.ServeHTTP(w, r)
				return
			}
			// No spans are recorded: otelhttp's wrapping (a tenth of the
			// gateway's CPU per request) buys nothing but the caller's
			// trace context, which is carried on by hand.
			routed.ServeHTTP(w, r.WithContext(extract(r.Context(), r.Header)))
		})
	}
}

// extract returns ctx with the W3C trace context and baggage of h, if it
// has any, so that what a service writes and publishes stays in the
// caller's trace when the service itself records no spans.
func extract(ctx context.Context, h http.Header) context.Context {
	if h.Get("Traceparent") == "" && h.Get("Baggage") == "" {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
}

// Transport wraps base (http.DefaultTransport when nil) so that outgoing
// requests carry the caller's trace context and get a client span: the
// gateway's client to the services.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return transport{base: base, traced: otelhttp.NewTransport(base,
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Host }))}
}

// transport is otelhttp's transport while spans are recorded; otherwise
// base, with the caller's trace context (if any) injected by hand.
type transport struct {
	base, traced http.RoundTripper
}

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if Enabled() {
		return t.traced.RoundTrip(r)
	}
	ctx := r.Context()
	if trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0 {
		r = r.Clone(ctx) // a RoundTripper must not change the caller's request
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(r.Header))
	}
	return t.base.RoundTrip(r)
}

// CloseIdleConnections closes base's idle connections, when it keeps any.
func (t transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
