package worker

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/web"
)

// GET / says what the service consumes and publishes, read from the
// contract's topology.
func TestHandleAbout(t *testing.T) {
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/", HandleAbout("payment", r))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	var a web.About
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Consumes) != 1 || a.Consumes[0].Queue != events.QueuePayment ||
		!slices.Equal(a.Consumes[0].RoutingKeys, events.QueueBindings(events.QueuePayment)) {
		t.Errorf("consumes %+v, want %s with its bindings", a.Consumes, events.QueuePayment)
	}
	if want := []string{events.RoutePaymentFailed, events.RoutePaymentProcessed, events.RoutePaymentRefunded}; !slices.Equal(a.Publishes, want) {
		t.Errorf("publishes %v, want %v", a.Publishes, want)
	}
}
