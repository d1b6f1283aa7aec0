// Package testenv gives integration tests their own piece of the real
// infrastructure: a fresh Postgres database, a RabbitMQ virtual host, a
// Mailpit, and a TCP proxy that can cut a service off from its broker or
// database; and it runs a service in-process (Run) or learns where a
// service process listens (Listening); the tests share its Send, GetJSON,
// PublishAll and SyncBuffer. The e2e tests run the four binaries
// as processes (e2e/system_test.go). When a dependency is not running,
// tests skip with a message, except under CI=true where they fail.
package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
)

// Defaults, overridable with TEST_DATABASE_URL, TEST_AMQP_URL and
// TEST_RABBITMQ_API.
var (
	PostgresURL = env("TEST_DATABASE_URL", "postgres://postgres@localhost:5432/postgres?sslmode=disable")
	AMQPURL     = env("TEST_AMQP_URL", "amqp://guest:guest@localhost:5672/")
	RabbitAPI   = env("TEST_RABBITMQ_API", "http://guest:guest@localhost:15672")
)

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// unavailable skips the test, or fails it under CI.
func unavailable(tb testing.TB, what string, err error) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s is required under CI: %v", what, err)
	}
	tb.Skipf("%s is not available (%v); start it or run .ci/run", what, err)
}

// Name returns a unique lower-case name with the prefix, usable as a
// database, vhost or queue name.
func Name(prefix string) string {
	return prefix + "_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
}

// Database creates a fresh database, drops it when the test ends, and
// returns its URL.
func Database(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL)
	if err != nil {
		unavailable(tb, "PostgreSQL", err)
	}
	defer conn.Close(ctx)
	name := Name("test")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, PostgresURL)
		if err != nil {
			tb.Logf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("drop database %s: %v", name, err)
		}
	})
	u, _ := url.Parse(PostgresURL)
	u.Path = "/" + name
	return u.String()
}

// VHost creates a RabbitMQ virtual host for the test, deletes it when the
// test ends, and returns an AMQP URL for it. Tests in their own vhost can
// declare the real exchange and queue names without seeing each other.
func VHost(tb testing.TB) string {
	tb.Helper()
	if c, err := net.DialTimeout("tcp", hostOf(AMQPURL), 2*time.Second); err != nil {
		unavailable(tb, "RabbitMQ", err)
	} else {
		c.Close()
	}
	name := Name("test")
	if err := addVHost(name); err != nil {
		tb.Fatalf("create vhost: %v", err)
	}
	created := time.Now()
	tb.Cleanup(func() {
		// RabbitMQ 3.10 crashes a quorum queue's dead-letter worker
		// (at-least-once, from the topology's policies) when the queue is
		// deleted in the milliseconds after it started; enough of those
		// crashes at once kill its supervisor, and every quorum queue
		// declared after that fails with INTERNAL_ERROR. A vhost is
		// therefore not deleted within two seconds of its creation.
		time.Sleep(time.Until(created.Add(2 * time.Second)))
		if err := deleteVHost(name); err != nil {
			tb.Logf("delete vhost %s: %v", name, err)
		}
	})
	u, _ := url.Parse(AMQPURL)
	u.Path = "/" + name
	// The topology's policies, as whoever administers a real broker sets
	// them: without them retries would expire into nothing.
	SetPolicies(tb, u.String(), events.Policies())
	return u.String()
}

// BrokerAddr and PostgresAddr are the host:port of TEST_AMQP_URL and
// TEST_DATABASE_URL, for proxies in front of them.
func BrokerAddr() string   { return hostOf(AMQPURL) }
func PostgresAddr() string { return hostOf(PostgresURL) }

// Long marks a test that takes minutes (the fault run, the knee search):
// `go test -short` skips it for a quick loop, but never under CI=true,
// where everything runs.
func Long(tb testing.TB) {
	tb.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		tb.Skip("a long run: -short skips it (CI runs it)")
	}
}

// User creates a RabbitMQ user (a fresh name starting with prefix) with
// every permission on the vhost of amqpURL (one of VHost's), deletes it when
// the test ends, and returns its name and an AMQP URL for it.
func User(tb testing.TB, amqpURL, prefix string) (string, string) {
	tb.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		tb.Fatal(err)
	}
	name, password := Name(prefix), uuid.NewString()
	vhost := strings.TrimPrefix(u.Path, "/")
	if err := api(http.MethodPut, "/api/users/"+name, `{"password":"`+password+`","tags":""}`); err != nil {
		tb.Fatalf("create user: %v", err)
	}
	tb.Cleanup(func() {
		if err := api(http.MethodDelete, "/api/users/"+name, ""); err != nil {
			tb.Logf("delete user %s: %v", name, err)
		}
	})
	if err := api(http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+name, `{"configure":".*","write":".*","read":".*"}`); err != nil {
		tb.Fatalf("grant user: %v", err)
	}
	u.User = url.UserPassword(name, password)
	return name, u.String()
}

// SetPolicies sets policies on the vhost of amqpURL (one of VHost's), as
// the deployments set events.Policies(): for a test's own queues, give it
// events.QueuePolicies(name).
func SetPolicies(tb testing.TB, amqpURL string, policies []events.Policy) {
	tb.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		tb.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	for _, p := range policies {
		def, err := json.Marshal(p.Definition)
		if err != nil {
			tb.Fatal(err)
		}
		body, err := json.Marshal(p)
		if err != nil {
			tb.Fatal(err)
		}
		if err := api(http.MethodPut, "/api/policies/"+url.PathEscape(vhost)+"/"+url.PathEscape(p.Name), string(body)); err == nil {
			continue
		}
		if out, err := exec.Command("rabbitmqctl", "set_policy", "-p", vhost, "--priority", strconv.Itoa(p.Priority),
			"--apply-to", p.ApplyTo, p.Name, p.Pattern, string(def)).CombinedOutput(); err != nil {
			tb.Fatalf("set policy %s: %v: %s", p.Name, err, out)
		}
	}
}

// hostOf is the host:port of a URL, with the scheme's default port when it
// names none.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if port := map[string]string{"amqp": "5672", "amqps": "5671", "postgres": "5432", "postgresql": "5432"}[u.Scheme]; u.Port() == "" && port != "" {
		return net.JoinHostPort(u.Hostname(), port)
	}
	return u.Host
}

// addVHost uses the management API, or rabbitmqctl where the management
// plugin is off.
func addVHost(name string) error {
	user := "guest"
	if u, err := url.Parse(AMQPURL); err == nil && u.User != nil {
		user = u.User.Username()
	}
	if err := api(http.MethodPut, "/api/vhosts/"+name, ""); err == nil {
		return api(http.MethodPut, "/api/permissions/"+name+"/"+user, `{"configure":".*","write":".*","read":".*"}`)
	}
	if out, err := exec.Command("rabbitmqctl", "add_vhost", name).CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl add_vhost: %v: %s", err, out)
	}
	if out, err := exec.Command("rabbitmqctl", "set_permissions", "-p", name, user, ".*", ".*", ".*").CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl set_permissions: %v: %s", err, out)
	}
	return nil
}

func deleteVHost(name string) error {
	if err := api(http.MethodDelete, "/api/vhosts/"+name, ""); err == nil {
		return nil
	}
	if out, err := exec.Command("rabbitmqctl", "delete_vhost", name).CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl delete_vhost: %v: %s", err, out)
	}
	return nil
}

func api(method, path, body string) error {
	req, err := http.NewRequest(method, RabbitAPI+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	u, _ := url.Parse(RabbitAPI)
	if u.User != nil {
		p, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), p)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}
