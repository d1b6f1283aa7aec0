package telemetry

import (
	"context"
	"net/http"
	"time"

	"github.com/felixge/httpsnoop"
	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
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
		return otelhttp.NewHandler(routed, "http.server",
			otelhttp.WithFilter(func(r *http.Request) bool { return !quiet[r.URL.Path] }),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
		)
	}
}

// Transport wraps base (http.DefaultTransport when nil) so that outgoing
// requests carry the caller's trace context and get a client span: the
// gateway's client to the services.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Host }))
}
