package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/checkout-demo/checkout/internal/events"
)

// wantQueues is every queue of events.Topology (consumer queues, their
// retry and dead-letter queues) with its arguments, as the services
// declare them, each value normalised through JSON.
func wantQueues(t *testing.T) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, q := range events.Topology {
		out[q.Name] = normalise(t, events.MainQueueArgs(q.Name))
		for n := 1; n <= events.RetryLevels; n++ {
			out[events.RetryQueue(q.Name, n)] = normalise(t, events.RetryQueueArgs(q.Name))
		}
		out[events.DeadLetterQueue(q.Name)] = map[string]any{}
	}
	if got := slices.Sorted(maps.Keys(out)); !slices.Equal(got, slices.Sorted(slices.Values(events.QueueNames()))) {
		t.Fatalf("events.QueueNames() %v disagrees with events.Topology %v", events.QueueNames(), got)
	}
	return out
}

// wantBindings is every "queue <- routing key" of events.Topology.
func wantBindings() []string {
	var out []string
	for _, q := range events.Topology {
		for _, k := range q.Bindings {
			out = append(out, q.Name+" <- "+k)
		}
	}
	return slices.Sorted(slices.Values(out))
}

func normalise(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if string(b) != "null" {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A policy as a deploy file gives it, normalised through JSON.
type policy struct {
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Priority   int            `json:"priority"`
	Definition map[string]any `json:"definition"`
}

// comparePolicies holds policies (name -> policy, of vhost /) to
// events.Policies(): the dead-lettering and retries of the queues the
// services declare without dead-letter arguments.
func comparePolicies(t *testing.T, where string, got map[string]policy) {
	t.Helper()
	want := map[string]policy{}
	for _, p := range events.Policies() {
		want[p.Name] = policy{Pattern: p.Pattern, ApplyTo: p.ApplyTo, Priority: p.Priority, Definition: normalise(t, p.Definition)}
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: no policy %s", where, name)
			continue
		}
		g.Definition = normalise(t, g.Definition)
		if fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: policy %s is %+v, want %+v (events.Policies)", where, name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: policy %s is not in events.Policies", where, name)
		}
	}
}

func compareTopology(t *testing.T, where string, queues map[string]map[string]any, bindings []string) {
	t.Helper()
	want := wantQueues(t)
	for name, args := range want {
		got, ok := queues[name]
		if !ok {
			t.Errorf("%s: no queue %s", where, name)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(args) {
			t.Errorf("%s: queue %s arguments %v, want %v (as the services declare it)", where, name, got, args)
		}
	}
	for name := range queues {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: queue %s is not in events.Topology", where, name)
		}
	}
	if got := slices.Sorted(slices.Values(bindings)); !slices.Equal(got, wantBindings()) {
		t.Errorf("%s: bindings %v, want %v", where, got, wantBindings())
	}
}

// The compose definitions declare the same queues and bindings as the code,
// so the broker has them before any service started.
func TestComposeTopology(t *testing.T) {
	p := composeProject(t)
	var defs struct {
		Queues []struct {
			Name, VHost string
			Durable     bool
			Arguments   map[string]any
		}
		Bindings []struct {
			Source, VHost, Destination string
			DestinationType            string `json:"destination_type"`
			RoutingKey                 string `json:"routing_key"`
		}
		Policies []struct {
			policy
			Name, VHost string
		}
	}
	for _, c := range p.Services["rabbitmq"].Configs {
		if c.Target == "/etc/rabbitmq/definitions.json" {
			if err := json.Unmarshal([]byte(p.Configs[c.Source].Content), &defs); err != nil {
				t.Fatalf("the RabbitMQ definitions are not JSON: %v", err)
			}
		}
	}
	queues := map[string]map[string]any{}
	for _, q := range defs.Queues {
		if q.VHost != "/" || !q.Durable {
			t.Errorf("definitions: queue %s on vhost %q durable %v, want / and durable", q.Name, q.VHost, q.Durable)
		}
		queues[q.Name] = normalise(t, q.Arguments)
	}
	var bindings []string
	for _, b := range defs.Bindings {
		if b.Source != events.Exchange || b.DestinationType != "queue" || b.VHost != "/" {
			t.Errorf("definitions: binding %+v is not from %s to a queue on /", b, events.Exchange)
		}
		bindings = append(bindings, b.Destination+" <- "+b.RoutingKey)
	}
	compareTopology(t, "compose definitions", queues, bindings)
	policies := map[string]policy{}
	for _, p := range defs.Policies {
		if p.VHost != "/" {
			t.Errorf("definitions: policy %s on vhost %q, want /", p.Name, p.VHost)
		}
		policies[p.Name] = p.policy
	}
	comparePolicies(t, "compose definitions", policies)
}

// The Topology Operator's Queue and Binding resources declare the same
// queues and bindings as the code in every overlay.
func TestKubernetesTopology(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := mustRender(t, dir)
			queues := map[string]map[string]any{}
			for _, o := range r.all("Queue") {
				q := decode[struct {
					Spec struct {
						Name, VHost, Type string
						Durable           bool
						Arguments         map[string]any
					}
				}](t, o).Spec
				if q.VHost != "/" || !q.Durable {
					t.Errorf("Queue %s: vhost %q durable %v, want / and durable", q.Name, q.VHost, q.Durable)
				}
				args := normalise(t, q.Arguments)
				// The operator sets x-queue-type from spec.type.
				if q.Type != "classic" {
					args["x-queue-type"] = q.Type
				}
				queues[q.Name] = args
			}
			var bindings []string
			for _, o := range r.all("Binding") {
				b := decode[struct {
					Spec struct {
						VHost, Source, Destination, DestinationType, RoutingKey string
					}
				}](t, o).Spec
				if b.Source != events.Exchange || b.DestinationType != "queue" || b.VHost != "/" {
					t.Errorf("Binding %+v is not from %s to a queue on /", b, events.Exchange)
				}
				bindings = append(bindings, b.Destination+" <- "+b.RoutingKey)
			}
			compareTopology(t, "kubernetes", queues, bindings)
			policies := map[string]policy{}
			for _, o := range r.all("Policy") {
				p := decode[struct {
					Spec struct {
						Name, VHost, Pattern, ApplyTo string
						Priority                      int
						Definition                    map[string]any
					}
				}](t, o).Spec
				if p.VHost != "/" {
					t.Errorf("Policy %s: vhost %q, want /", p.Name, p.VHost)
				}
				policies[p.Name] = policy{Pattern: p.Pattern, ApplyTo: p.ApplyTo, Priority: p.Priority, Definition: p.Definition}
			}
			comparePolicies(t, "kubernetes", policies)
		})
	}
}
