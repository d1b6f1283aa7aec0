package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// A rabbitGrant is one user's permissions on a vhost, as a deploy file gives
// them.
type rabbitGrant struct {
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// kedaRole is the key of KEDA's user in a set of grants; the other keys are
// service names.
const kedaRole = "keda"

// checkGrants creates a user per role with its grant in a fresh vhost of the
// machine's RabbitMQ and holds what each may do to events.Topology: a
// service declares the whole topology (every queue, its retry and
// dead-letter queues, the bindings), publishes to the exchange, moves its
// own messages to its retry and dead-letter queues, consumes its own queue
// and reads its dead letters; it cannot consume or read another service's
// queue (main, retry or dead-letter), nor declare a queue outside the
// topology. KEDA reads queue depths
// and can do nothing else.
func checkGrants(t *testing.T, grants map[string]rabbitGrant) {
	t.Helper()
	vhostURL := testenv.VHost(t)
	vu, _ := url.Parse(vhostURL)
	vhost := strings.TrimPrefix(vu.Path, "/")
	prefix := testenv.Name("perm")
	var defs struct {
		Users       []map[string]any `json:"users"`
		Permissions []map[string]any `json:"permissions"`
	}
	userURL := map[string]string{}
	for role, g := range grants {
		name := prefix + "_" + role
		defs.Users = append(defs.Users, map[string]any{"name": name, "password": "pw-" + role, "tags": []string{}})
		defs.Permissions = append(defs.Permissions, map[string]any{"user": name, "vhost": vhost,
			"configure": g.Configure, "write": g.Write, "read": g.Read})
		u := *vu
		u.User = url.UserPassword(name, "pw-"+role)
		userURL[role] = u.String()
	}
	importDefinitions(t, defs)
	t.Cleanup(func() {
		for _, u := range defs.Users {
			deleteRabbitUser(t, u["name"].(string))
		}
	})
	checkRoles(t, vhostURL, userURL)
}

// checkRoles holds users (role -> AMQP URL of an existing user) to what
// their role may do; see checkGrants. adminURL is the test's own access to
// the vhost: it declares the topology first, as a service would have before
// KEDA looks.
func checkRoles(t *testing.T, adminURL string, userURL map[string]string) {
	t.Helper()
	admin, err := amqp.Dial(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	svcs := services(t)
	roles := slices.Sorted(maps.Keys(userURL))
	// KEDA last: it looks at queues a service declared.
	slices.SortStableFunc(roles, func(a, b string) int { return cmp.Compare(btoi(a == kedaRole), btoi(b == kedaRole)) })
	for _, role := range roles {
		u := userURL[role]
		// Each service declares the topology where none exists yet, as the
		// first service to start does: declaring a queue with a dead-letter
		// exchange is checked (read on the queue, write on that exchange)
		// only when the queue is created.
		deleteAll(t, channel(t, admin))
		if role == kedaRole {
			declareAll(t, channel(t, admin))
		}
		t.Run(role, func(t *testing.T) {
			conn, err := amqp.Dial(u)
			if err != nil {
				t.Fatalf("connect as %s: %v", role, err)
			}
			defer conn.Close()
			if role == kedaRole {
				checkKEDA(t, conn)
				return
			}
			svc, ok := svcs[role]
			if !ok || len(svc.Queues) != 1 {
				t.Fatalf("role %s: no service consuming exactly one queue (%v)", role, svc.Queues)
			}
			checkService(t, conn, svc.Queues[0])
			// An upgrade, as on a machine where an earlier version ran:
			// the queues exist with that version's arguments (classic
			// main queues, retry queues with dead-letter arguments); the
			// service keeps them as they are and starts.
			deleteAll(t, channel(t, admin))
			declareEarlier(t, channel(t, admin))
			checkStarts(t, u)
		})
	}
}

// declareEarlier declares the topology as an earlier version did.
func declareEarlier(t *testing.T, ch *amqp.Channel) {
	t.Helper()
	for _, q := range events.Topology {
		if _, err := ch.QueueDeclare(q.Name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for retry := 1; retry <= events.RetryLevels; retry++ {
			if _, err := ch.QueueDeclare(events.RetryQueue(q.Name, retry), true, false, false, false,
				amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q.Name}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkStarts connects a broker as the service does at start (declaring
// the whole topology) with the user of amqpURL.
func checkStarts(t *testing.T, amqpURL string) {
	t.Helper()
	b := events.NewBroker(amqpURL, slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Topology = events.Topology
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	// Channel waits for the connection, which is up once the topology is
	// declared.
	ch, err := b.Channel(wait)
	if err != nil {
		t.Fatalf("the service does not start on the earlier version's queues: %v", err)
	}
	_ = ch.Close()
}

func checkService(t *testing.T, conn *amqp.Connection, own string) {
	ch := channel(t, conn)
	declareAll(t, ch)
	if !slices.ContainsFunc(events.Topology, func(q events.QueueSpec) bool { return q.Name == own }) {
		t.Fatalf("the service's queue %s is not in events.Topology", own)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publish := func(exchange, key string) error {
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, true, false, amqp.Publishing{Body: []byte("{}")})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("not confirmed: %v", err)
		}
		return nil
	}
	for _, p := range []struct{ exchange, key string }{
		{events.Exchange, events.RouteOrderCreated},
		{"", events.RetryQueue(own, 1)},
		{"", events.RetryQueue(own, 4)},
		{"", events.DeadLetterQueue(own)},
	} {
		if err := publish(p.exchange, p.key); err != nil {
			t.Fatalf("publish to %q with key %s: %v", p.exchange, p.key, err)
		}
	}
	if _, err := ch.Consume(own, "", false, false, false, false, nil); err != nil {
		t.Errorf("consume its own queue %s: %v", own, err)
	}
	ch2 := channel(t, conn)
	if _, _, err := ch2.Get(events.DeadLetterQueue(own), false); err != nil {
		t.Errorf("read its own dead letters: %v", err)
	}

	refused := func(what string, op func(*amqp.Channel) error) {
		t.Helper()
		err := op(channel(t, conn))
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
			t.Errorf("%s: got %v, want ACCESS_REFUSED", what, err)
		}
	}
	for _, q := range events.Topology {
		if q.Name == own {
			continue
		}
		refused("consume another service's queue "+q.Name, func(ch *amqp.Channel) error {
			_, err := ch.Consume(q.Name, "", false, false, false, false, nil)
			return err
		})
		refused("read another service's dead letters "+events.DeadLetterQueue(q.Name), func(ch *amqp.Channel) error {
			_, _, err := ch.Get(events.DeadLetterQueue(q.Name), false)
			return err
		})
		refused("read another service's retry queue "+events.RetryQueue(q.Name, 1), func(ch *amqp.Channel) error {
			_, _, err := ch.Get(events.RetryQueue(q.Name, 1), false)
			return err
		})
		refused("purge another service's queue "+q.Name, func(ch *amqp.Channel) error {
			_, err := ch.QueuePurge(q.Name, false)
			return err
		})
	}
	refused("declare a queue outside the topology", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare("rogue", false, true, false, false, nil)
		return err
	})
}

// declareAll declares what every service declares at start: the exchange
// and every queue of the topology with its bindings, retry and dead-letter
// queues.
func declareAll(t *testing.T, ch *amqp.Channel) {
	t.Helper()
	if err := events.DeclareAll(ch); err != nil {
		t.Fatalf("declare the topology: %v", err)
	}
}

// deleteAll deletes every queue of the topology.
func deleteAll(t *testing.T, ch *amqp.Channel) {
	t.Helper()
	for _, q := range events.Topology {
		names := []string{q.Name, events.DeadLetterQueue(q.Name)}
		for retry := 1; retry <= events.RetryLevels; retry++ {
			names = append(names, events.RetryQueue(q.Name, retry))
		}
		for _, n := range names {
			if _, err := ch.QueueDelete(n, false, false, false); err != nil {
				t.Fatalf("delete %s: %v", n, err)
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func checkKEDA(t *testing.T, conn *amqp.Connection) {
	for _, q := range events.Topology {
		ch := channel(t, conn)
		if _, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, nil); err != nil {
			t.Errorf("KEDA reads the depth of %s: %v", q.Name, err)
		}
		ch = channel(t, conn)
		var ae *amqp.Error
		if _, err := ch.Consume(q.Name, "", false, false, false, false, nil); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
			t.Errorf("KEDA consumes %s: got %v, want ACCESS_REFUSED", q.Name, err)
		}
	}
	ch := channel(t, conn)
	var ae *amqp.Error
	if err := events.DeclareExchange(ch); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Errorf("KEDA declares the exchange: got %v, want ACCESS_REFUSED", err)
	}
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// importDefinitions loads a definitions document into the machine's
// RabbitMQ, through the management API or else rabbitmqctl.
func importDefinitions(t *testing.T, defs any) {
	t.Helper()
	body, err := json.Marshal(defs)
	if err != nil {
		t.Fatal(err)
	}
	if rabbitAPI(http.MethodPost, "/api/definitions", string(body)) == nil {
		return
	}
	cmd := exec.Command("rabbitmqctl", "-q", "import_definitions", "-")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl import_definitions: %v: %s", err, out)
	}
}

func deleteRabbitUser(t *testing.T, name string) {
	if rabbitAPI(http.MethodDelete, "/api/users/"+url.PathEscape(name), "") == nil {
		return
	}
	if out, err := exec.Command("rabbitmqctl", "-q", "delete_user", name).CombinedOutput(); err != nil {
		t.Logf("delete RabbitMQ user %s: %v: %s", name, err, out)
	}
}

// rabbitAPIGet decodes the management API's answer to GET path into v.
func rabbitAPIGet(t *testing.T, path string, v any) {
	t.Helper()
	u, err := url.Parse(testenv.RabbitAPI)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, strings.Replace(testenv.RabbitAPI, u.User.String()+"@", "", 1)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	req.SetBasicAuth(u.User.Username(), pw)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func rabbitAPI(method, path, body string) error {
	u, err := url.Parse(testenv.RabbitAPI)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, strings.Replace(testenv.RabbitAPI, u.User.String()+"@", "", 1)+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	pw, _ := u.User.Password()
	req.SetBasicAuth(u.User.Username(), pw)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}
