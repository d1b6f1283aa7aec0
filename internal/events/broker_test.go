package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

type apiConn struct {
	Name             string `json:"name"`
	ClientProperties struct {
		ConnectionName string `json:"connection_name"`
	} `json:"client_properties"`
}

// connections returns the vhost's connections by their connection_name,
// through the management API.
func connections(t *testing.T, vhost string) map[string]string {
	t.Helper()
	resp, err := http.Get(testenv.RabbitAPI + "/api/vhosts/" + url.PathEscape(vhost) + "/connections")
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	defer resp.Body.Close()
	var conns []apiConn
	if err := json.NewDecoder(resp.Body).Decode(&conns); err != nil {
		t.Fatalf("management API: %s: %v", resp.Status, err)
	}
	out := map[string]string{}
	for _, c := range conns {
		out[c.ClientProperties.ConnectionName] = c.Name
	}
	return out
}

func closeConnection(t *testing.T, name string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, testenv.RabbitAPI+"/api/connections/"+url.PathEscape(name), nil)
	if u, err := url.Parse(testenv.RabbitAPI); err == nil && u.User != nil {
		p, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), p)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("close connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("close connection %s: %s %s", name, resp.Status, b)
	}
}

// A service consumes and publishes on two connections, named for it in the
// management UI. When the broker closes the publishing one (as an operator
// or a failing node can), both are dialled again and publishing resumes.
func TestBrokerSeparateConnections(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	q := testenv.Watch(t, amqpURL, testKey)

	log := web.NewLogger(io.Discard, "error", "json", "test")
	ctx, cancel := context.WithCancel(context.Background())
	b := events.NewBroker(amqpURL, log)
	b.Name = "svc"
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	pub := events.NewPublisher(b)
	t.Cleanup(pub.Close)

	var before map[string]string
	waitFor(t, "two named connections", func() bool {
		before = connections(t, vhost)
		return before["svc consume"] != "" && before["svc publish"] != ""
	})

	closeConnection(t, before["svc publish"])
	var after map[string]string
	waitFor(t, "both connections dialled again", func() bool {
		after = connections(t, vhost)
		return after["svc consume"] != "" && after["svc publish"] != "" &&
			after["svc consume"] != before["svc consume"] && after["svc publish"] != before["svc publish"]
	})

	msg := events.Message{ID: "after-reconnect", Type: "Thing", RoutingKey: testKey, Body: []byte(`{}`)}
	waitFor(t, "a confirmed publish", func() bool {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		res, err := pub.Publish(pctx, []events.Message{msg})
		if errors.Is(err, events.ErrNotConnected) {
			return false
		}
		if err != nil || res[0].Err != nil {
			t.Logf("publish: %v %v", err, fmt.Sprint(res))
			return false
		}
		return true
	})
	if got := q.Next(1, 10*time.Second)[0].MessageId; got != msg.ID {
		t.Fatalf("delivered %q, want %q", got, msg.ID)
	}
}
