package web

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// RequestIDHeader carries the request id from the gateway downstream.
const RequestIDHeader = "X-Request-ID"

// UserHeader carries the signed-in customer's user id (the verified JWT
// subject) from the gateway to the order service. The gateway removes it
// from every client request and sets it only after verifying a token; the
// order service trusts it because only the gateway can reach it (127.0.0.1
// natively, NetworkPolicies in Kubernetes).
const UserHeader = "X-User-ID"

type ctxKey struct{}

// RequestID returns the request id stored in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// Middleware takes the request id from X-Request-ID (or makes one), echoes it
// in the response, and logs one line per request: at debug when it
// succeeded, at info for a client error, at warn for a server error. Requests
// for the probes and the metric scrapes are not logged unless they failed:
// they would drown everything else.
// The lines carry the request's trace_id when Observed (or
// telemetry.Middleware) runs outside it.
func Middleware(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		w.Header().Set(RequestIDHeader, id)
		r = r.WithContext(WithRequestID(r.Context(), id))
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					// Deliberate: net/http resets the connection.
					log.WarnContext(r.Context(), "request aborted", "request_id", id, "method", r.Method, "path", r.URL.Path, "status", rec.status)
					panic(p)
				}
				log.ErrorContext(r.Context(), "panic in handler", "request_id", id, "panic", p)
				if !rec.wrote {
					WriteProblem(rec, r, http.StatusInternalServerError, "internal error")
				}
			}
			switch r.URL.Path {
			case "/livez", "/readyz", "/health", "/metrics":
				if rec.status < 500 {
					return
				}
			}
			// A request that went well is logged at debug only: the work it
			// did logs its own line with the request id (order created),
			// and the duration histogram counts it. Client errors are
			// logged at info, server errors at warn.
			level := slog.LevelDebug
			switch {
			case rec.status >= 500:
				level = slog.LevelWarn
			case rec.status >= 400:
				level = slog.LevelInfo
			}
			if !log.Enabled(r.Context(), level) {
				return
			}
			log.Log(r.Context(), level, "request", "request_id", id, "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
		}()
		next.ServeHTTP(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Observed is Middleware with tracing and metrics around it: it serves m's
// metrics at GET /metrics on r, and returns r behind Middleware behind
// telemetry.Middleware (a server span per request continuing the caller's
// trace, and the request duration histogram by route, method and status).
// A service's NewServer returns web.Observed(log, metrics, r) where it
// returned web.Middleware(log, r).
func Observed(log *slog.Logger, m *telemetry.Metrics, r chi.Router) http.Handler {
	r.Method(http.MethodGet, "/metrics", m.Handler())
	return telemetry.Middleware(m)(Middleware(log, r))
}
