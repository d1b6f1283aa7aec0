package deploy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

const observabilityDir = "observability"

// The app's compose services as Prometheus scrapes them, and the short
// name its "service" label gives each (the Kubernetes Service's name).
var scraped = map[string]string{"api-gateway": "gateway", "order-service": "order", "payment-service": "payment", "email-service": "email"}

func loadObservability(t *testing.T) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(root, "deploy", observabilityDir))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(abs, "compose.yaml")},
		cli.WithWorkingDirectory(abs), cli.WithName("checkout"), cli.WithProfiles([]string{"observability"}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load deploy/observability/compose.yaml: %v", err)
	}
	return p
}

// TestObservabilityCompose holds the observability compose file to what
// the README promises: Jaeger (OTLP on 4317 and 4318, UI on 16686),
// Prometheus and Grafana, all behind the observability profile, their
// configuration files in place.
func TestObservabilityCompose(t *testing.T) {
	p := loadObservability(t)
	want := map[string][]uint32{"jaeger": {4317, 4318, 16686}, "prometheus": {9090}, "grafana": {3000}}
	for name, ports := range want {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if !slices.Equal(s.Profiles, []string{"observability"}) {
			t.Errorf("%s: profiles %v, want [observability] (a plain up must stay the seed's containers)", name, s.Profiles)
		}
		var got []uint32
		for _, pc := range s.Ports {
			got = append(got, pc.Target)
		}
		slices.Sort(got)
		if !slices.Equal(got, ports) {
			t.Errorf("%s publishes %v, want %v", name, got, ports)
		}
	}
	if len(p.Services) != len(want) {
		t.Errorf("services %v, want only %v", slices.Collect(mapsKeys(p.Services)), want)
	}
	for name, c := range p.Configs {
		if _, err := os.Stat(c.File); err != nil {
			t.Errorf("config %s: %v", name, err)
		}
	}
	// The dashboard Grafana provisions is the one Kubernetes gets.
	dash, ok := p.Configs["grafana-dashboard-checkout"]
	if !ok || !strings.HasSuffix(filepath.ToSlash(dash.File), "deploy/kubernetes/base/observability/checkout-dashboard.json") {
		t.Errorf("Grafana's dashboard comes from %q, not the Kubernetes base's", dash.File)
	}
}

// TestPrometheusConfig: every service is scraped on the port its code
// listens on, with the service label the dashboard groups by, and so is
// RabbitMQ's plugin on 15692, aggregated and per queue.
func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		Global        map[string]any `json:"global"`
		ScrapeConfigs []struct {
			JobName     string              `json:"job_name"`
			MetricsPath string              `json:"metrics_path"`
			Params      map[string][]string `json:"params"`
			DNSSD       []struct {
				Names           []string
				Type            string
				Port            int
				RefreshInterval string `json:"refresh_interval"`
			} `json:"dns_sd_configs"`
			Static []struct {
				Targets []string
				Labels  map[string]string
			} `json:"static_configs"`
			Relabel []struct {
				TargetLabel string `json:"target_label"`
				Replacement string
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", observabilityDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	svcs := services(t)
	found := map[string]bool{}
	var rabbitPaths []string
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNSSD {
			for _, host := range d.Names {
				short, ok := scraped[host]
				if !ok {
					t.Errorf("job %s scrapes %s, which is no app service", sc.JobName, host)
					continue
				}
				found[short] = true
				if want := svcs[short].Port(nil); strconv.Itoa(d.Port) != want {
					t.Errorf("job %s scrapes %s:%d; the service listens on %s", sc.JobName, host, d.Port, want)
				}
				label := ""
				for _, r := range sc.Relabel {
					if r.TargetLabel == "service" {
						label = r.Replacement
					}
				}
				if label != short {
					t.Errorf("job %s: service label %q, want %q", sc.JobName, label, short)
				}
			}
		}
		for _, s := range sc.Static {
			if slices.Contains(s.Targets, "rabbitmq:15692") {
				path := cmpOr(sc.MetricsPath, "/metrics")
				if path == "/metrics/detailed" && !slices.Contains(sc.Params["family"], "queue_coarse_metrics") {
					t.Errorf("job %s: the detailed endpoint without queue_coarse_metrics gives no queue depths", sc.JobName)
				}
				rabbitPaths = append(rabbitPaths, path)
			}
		}
	}
	for name := range svcs {
		if !found[name] {
			t.Errorf("%s is not scraped", name)
		}
	}
	slices.Sort(rabbitPaths)
	if !slices.Equal(rabbitPaths, []string{"/metrics", "/metrics/detailed"}) {
		t.Errorf("RabbitMQ scraped at %v", rabbitPaths)
	}
}

// definedMetrics returns the metric families the code defines, with the
// label names of each: every telemetry.Metrics method is called once so
// that every vector has a child.
func definedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	m := telemetry.NewMetrics()
	m.ObserveHTTP("/", "GET", 200, time.Millisecond)
	m.ConsumerMessage("q", telemetry.OutcomeHandled, time.Millisecond)
	m.PublishConfirm(telemetry.ConfirmAck)
	m.SagaOutcome(telemetry.SagaPaid)
	m.TimeToMail(time.Second)
	m.SMTPSend(time.Millisecond, nil)
	m.SMTPSend(time.Millisecond, context.Canceled)
	m.ProviderCall(telemetry.ProviderApproved, time.Millisecond)
	m.BreakerState("b", telemetry.BreakerClosed)
	m.RegisterOutbox(func(context.Context) (telemetry.OutboxStats, error) { return telemetry.OutboxStats{}, nil })
	m.RegisterQueueDepths([]string{"q.dlq"}, func(context.Context, string) (int, error) { return 0, nil })
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, f := range fams {
		var labels []string
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if !slices.Contains(labels, l.GetName()) {
					labels = append(labels, l.GetName())
				}
			}
		}
		out[f.GetName()] = labels
	}
	return out
}

// RabbitMQ's metrics the dashboard uses (rabbitmq_prometheus, the
// detailed endpoint's queue_coarse_metrics family), and their labels.
var rabbitMetrics = map[string][]string{"rabbitmq_detailed_queue_messages_ready": {"vhost", "queue"}}

var (
	metricRef   = regexp.MustCompile(`\b((?:checkout|rabbitmq)_[a-z0-9_]+)(\{[^}]*\})?`)
	matcherName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

// TestDashboard: the dashboard parses, queries the provisioned data
// source, names only metrics the code (or RabbitMQ's plugin) defines with
// labels they have, and Kubernetes gets the same JSON.
func TestDashboard(t *testing.T) {
	path := filepath.Join(root, "deploy", "kubernetes", "base", "observability", "checkout-dashboard.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string
		Datasource struct{ UID string }
	}
	type panel struct {
		Type, Title string
		Datasource  struct{ UID string }
		Targets     []target
	}
	var dash struct {
		UID, Title string
		Panels     []panel
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var ds struct {
		Datasources []struct{ UID, Type string }
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", observabilityDir, "grafana", "provisioning", "datasources", "prometheus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("datasource provisioning: %v %+v", err, ds)
	}
	uid := ds.Datasources[0].UID

	defined := definedMetrics(t)
	// Labels every series has from the scrape, and le of histogram buckets.
	scrapeLabels := []string{"service", "job", "instance", "le"}
	used := map[string]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != uid || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %q, %d queries", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, tg := range p.Targets {
			queries++
			refs := metricRef.FindAllStringSubmatch(tg.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("panel %q: %s names no metric", p.Title, tg.Expr)
			}
			for _, ref := range refs {
				name := ref[1]
				family := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if base, ok := strings.CutSuffix(name, suffix); ok {
						if _, known := defined[base]; known {
							family = base
						}
					}
				}
				labels, ok := defined[family]
				if !ok {
					labels, ok = rabbitMetrics[family]
				}
				if !ok {
					t.Errorf("panel %q queries %s, which nothing defines", p.Title, name)
					continue
				}
				used[family] = true
				for _, mm := range matcherName.FindAllStringSubmatch(ref[2], -1) {
					if !slices.Contains(labels, mm[1]) && !slices.Contains(scrapeLabels, mm[1]) {
						t.Errorf("panel %q: %s has no label %s (it has %v)", p.Title, name, mm[1], labels)
					}
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("only %d queries", queries)
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"checkout_http_request_duration_seconds", "checkout_saga_outcomes_total",
		"checkout_saga_time_to_mail_seconds", "rabbitmq_detailed_queue_messages_ready",
		"checkout_outbox_oldest_pending_age_seconds", "checkout_queue_messages", "checkout_consumer_messages_total"} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
	// The checkout route the panels filter on is the gateway's.
	routes, err := os.ReadFile(filepath.Join(root, "gateway", "routes.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(routes), `http.MethodPost, "/api/checkout"`) {
		t.Error(`the dashboard filters on route="/api/checkout", which the gateway does not serve`)
	}

	for _, dir := range overlays(t) {
		cm, ok := mustRender(t, dir).get("ConfigMap", "checkout-dashboard")
		if !ok {
			t.Errorf("%s: no ConfigMap checkout-dashboard", dir)
			continue
		}
		c := decode[struct {
			Metadata struct{ Labels map[string]string }
			Data     map[string]string
		}](t, cm)
		if c.Data["checkout-dashboard.json"] != string(raw) {
			t.Errorf("%s: the ConfigMap's dashboard differs from %s", dir, path)
		}
		if c.Metadata.Labels["grafana_dashboard"] != "1" {
			t.Errorf("%s: the dashboard ConfigMap lacks the sidecar's label grafana_dashboard=1", dir)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestPrometheusScrapesComposeServices: the compose services Prometheus
// scrapes are the ones docker-compose.yml builds from the four services.
func TestPrometheusScrapesComposeServices(t *testing.T) {
	p := composeProject(t)
	for name, short := range scraped {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("prometheus.yml scrapes %s, which docker-compose.yml has no service %s for", short, name)
			continue
		}
		if s.Build == nil || s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != short {
			t.Errorf("compose service %s is not built as %s", name, short)
		}
	}
}
