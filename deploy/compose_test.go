package deploy

import (
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/checkout-demo/checkout/internal/events"
)

// loadCompose loads docker-compose.yml the way docker compose does (schema
// validation, interpolation from .env only, not from this process's
// environment, normalisation).
var loadCompose = sync.OnceValues(func() (*types.Project, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(abs, "docker-compose.yml")},
		cli.WithWorkingDirectory(abs), cli.WithEnvFiles(filepath.Join(abs, ".env")), cli.WithDotEnv)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
})

func composeProject(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose()
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

// composeEnv is a compose service's environment after interpolation.
func composeEnv(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			t.Errorf("%s: %s has no value", s.Name, k)
			continue
		}
		env[k] = *v
	}
	return env
}

// The seed's containers and the host ports they publish (host -> target).
var composeInfra = map[string]map[string]uint32{
	"rabbitmq":   {"5672": 5672, "15672": 15672},
	"order-db":   {"5433": 5432},
	"payment-db": {"5434": 5432},
	"mailpit":    {"1026": 1025, "8026": 8025},
}

// publishedFixed are the services with fixed host ports: the gateway (the
// entry point) and the infrastructure. The other services scale.
func publishedFixed(name string) bool { _, ok := composeInfra[name]; return ok || name == "gateway" }

func TestCompose(t *testing.T) {
	p := composeProject(t)
	svcs := services(t)
	dfs := dockerfiles(t)

	var want []string
	for name := range svcs {
		want = append(want, name)
	}
	for name := range composeInfra {
		want = append(want, name)
	}
	if got := p.ServiceNames(); !sameSet(got, want) {
		t.Errorf("compose services %v, want %v", got, want)
	}

	for _, s := range p.Services {
		t.Run(s.Name, func(t *testing.T) {
			if s.ContainerName != "" {
				t.Errorf("container_name %q: a fixed name stops --scale", s.ContainerName)
			}
			hc := s.HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
				t.Errorf("healthcheck %+v, want a CMD test", hc)
			}
			// Every dependency is awaited healthy, and has a healthcheck.
			for dep, d := range s.DependsOn {
				if d.Condition != types.ServiceConditionHealthy {
					t.Errorf("depends_on %s: condition %q, want service_healthy", dep, d.Condition)
				}
				if ds, ok := p.Services[dep]; !ok || ds.HealthCheck == nil || ds.HealthCheck.Disable {
					t.Errorf("depends_on %s, which has no healthcheck", dep)
				}
			}
			for _, port := range s.Ports {
				if port.Published != "" && !publishedFixed(s.Name) {
					t.Errorf("fixed host port %s: `docker compose up --scale %s=3` would fail", port.Published, s.Name)
				}
				if port.HostIP != "127.0.0.1" {
					t.Errorf("port %d binds to %q, want 127.0.0.1 by default (BIND_ADDRESS in .env)", port.Target, port.HostIP)
				}
			}
			if svc, ok := svcs[s.Name]; ok {
				checkComposeService(t, p, s, svc, dfs[s.Name])
			} else {
				wantPorts := composeInfra[s.Name]
				got := map[string]uint32{}
				for _, port := range s.Ports {
					got[port.Published] = port.Target
				}
				if !maps.Equal(got, wantPorts) {
					t.Errorf("host ports (host: container) %v, want %v", got, wantPorts)
				}
			}
		})
	}

	// The seed's user and exchange come from the definitions file.
	rabbit := p.Services["rabbitmq"]
	defs := rabbitDefinitions(t, p)
	if len(defs.Users) == 0 {
		t.Fatal("the RabbitMQ definitions declare no user (with definitions, RabbitMQ creates no default user)")
	}
	if u := defs.Users[0]; u.Name != "ecommerce" || u.Password != "ecommerce123" {
		t.Errorf("RabbitMQ user %s/%s with the committed .env, want ecommerce/ecommerce123", u.Name, u.Password)
	}
	if !slices.ContainsFunc(defs.Exchanges, func(e rabbitExchange) bool {
		return e.Name == events.Exchange && e.Type == "topic" && e.Durable && e.VHost == "/"
	}) {
		t.Errorf("definitions exchanges %+v, want %s (topic, durable) on /", defs.Exchanges, events.Exchange)
	}
	confOK := false
	for _, c := range rabbit.Configs {
		if strings.HasPrefix(c.Target, "/etc/rabbitmq/conf.d/") && strings.Contains(p.Configs[c.Source].Content, "load_definitions = /etc/rabbitmq/definitions.json") {
			confOK = true
		}
	}
	if !confOK {
		t.Error("no rabbitmq conf.d file sets load_definitions = /etc/rabbitmq/definitions.json")
	}
}

// checkComposeService holds one of the checkout's services to its code and
// its Dockerfile.
func checkComposeService(t *testing.T, p *types.Project, s types.ServiceConfig, svc service, df *dockerfile) {
	env := composeEnv(t, s)
	for k := range env {
		if !svc.Reads(k) {
			t.Errorf("environment sets %s, which %s does not read (its envconfig tags: %v)", k, svc.Name, slices.Sorted(maps.Keys(svc.Env)))
		}
	}
	port := svc.Port(env)
	if len(s.Ports) != 1 || strconv.Itoa(int(s.Ports[0].Target)) != port {
		t.Errorf("ports %+v, want one with target %s (where %s listens)", s.Ports, port, svc.Name)
	}
	if svc.Name == "gateway" && (len(s.Ports) != 1 || s.Ports[0].Published != port) {
		t.Errorf("gateway ports %+v, want host port %s", s.Ports, port)
	}
	if s.Build == nil || filepath.Clean(s.Build.Dockerfile) != filepath.Join(svc.Name, "Dockerfile") {
		t.Errorf("build %+v, want dockerfile %s/Dockerfile", s.Build, svc.Name)
	} else if abs, _ := filepath.Abs(root); filepath.Clean(s.Build.Context) != abs {
		t.Errorf("build context %s, want the repository root %s", s.Build.Context, abs)
	}
	if want := append([]string{"CMD"}, df.Healthcheck...); !slices.Equal(s.HealthCheck.Test, want) {
		t.Errorf("healthcheck %q, want the image's %q", s.HealthCheck.Test, want)
	}
	if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
		t.Errorf("read_only %v, cap_drop %v: want a read-only root and no capabilities", s.ReadOnly, s.CapDrop)
	}

	// Every address it is given is another compose service, started first.
	needs := func(host, why string) types.ServiceConfig {
		dep, ok := p.Services[host]
		if !ok {
			t.Errorf("%s: host %q is no compose service", why, host)
			return types.ServiceConfig{}
		}
		if _, ok := s.DependsOn[host]; !ok {
			t.Errorf("%s points at %s, but %s does not depend on it", why, host, s.Name)
		}
		return dep
	}
	for k, v := range env {
		switch {
		case k == "DATABASE_URL":
			u := mustURL(t, k, v)
			db := needs(u.Hostname(), k)
			dbEnv := composeEnv(t, db)
			pw, _ := u.User.Password()
			if u.Port() != "5432" || u.User.Username() != dbEnv["POSTGRES_USER"] || pw != dbEnv["POSTGRES_PASSWORD"] || strings.TrimPrefix(u.Path, "/") != dbEnv["POSTGRES_DB"] {
				t.Errorf("%s %s does not match %s's POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and port 5432", k, v, db.Name)
			}
		case k == "AMQP_URL":
			u := mustURL(t, k, v)
			needs(u.Hostname(), k)
			pw, _ := u.User.Password()
			defs := rabbitDefinitions(t, p)
			if u.Port() != "5672" || !slices.ContainsFunc(defs.Users, func(r rabbitUser) bool { return r.Name == u.User.Username() && r.Password == pw }) {
				t.Errorf("%s %s: no such user in the RabbitMQ definitions, or not port 5672", k, v)
			}
			if !slices.ContainsFunc(defs.Permissions, func(r rabbitPermission) bool { return r.User == u.User.Username() && r.VHost == "/" }) {
				t.Errorf("%s: user %s has no permissions on /", k, u.User.Username())
			}
		case k == "SMTP_HOST":
			mp := needs(v, k)
			smtp := false
			for _, port := range mp.Ports {
				smtp = smtp || strconv.Itoa(int(port.Target)) == svc.envOr(env, "SMTP_PORT") && port.Published == "1026"
			}
			if !smtp {
				t.Errorf("SMTP_HOST %s, SMTP_PORT %s: not the SMTP port %s publishes as 1026", v, svc.envOr(env, "SMTP_PORT"), v)
			}
		case strings.HasSuffix(k, "_SERVICE_URL"):
			u := mustURL(t, k, v)
			needs(u.Hostname(), k)
			if target, ok := services(t)[u.Hostname()]; !ok || u.Port() != target.Port(composeEnv(t, p.Services[u.Hostname()])) {
				t.Errorf("%s %s: not the port that service listens on", k, v)
			}
		}
	}
}

// envOr is env[k] or the service's default for k.
func (s service) envOr(env map[string]string, k string) string {
	if v, ok := env[k]; ok {
		return v
	}
	return s.Env[k]
}

type rabbitUser struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}
type rabbitPermission struct {
	User  string `json:"user"`
	VHost string `json:"vhost"`
}
type rabbitExchange struct {
	Name    string `json:"name"`
	VHost   string `json:"vhost"`
	Type    string `json:"type"`
	Durable bool   `json:"durable"`
}
type rabbitDefs struct {
	Users       []rabbitUser            `json:"users"`
	VHosts      []struct{ Name string } `json:"vhosts"`
	Permissions []rabbitPermission      `json:"permissions"`
	Exchanges   []rabbitExchange        `json:"exchanges"`
}

// rabbitDefinitions is the definitions file the rabbitmq container loads.
func rabbitDefinitions(t *testing.T, p *types.Project) rabbitDefs {
	t.Helper()
	var defs rabbitDefs
	for _, c := range p.Services["rabbitmq"].Configs {
		if c.Target != "/etc/rabbitmq/definitions.json" {
			continue
		}
		if err := json.Unmarshal([]byte(p.Configs[c.Source].Content), &defs); err != nil {
			t.Fatalf("the RabbitMQ definitions are not JSON: %v", err)
		}
		return defs
	}
	t.Fatal("no config is mounted as /etc/rabbitmq/definitions.json in rabbitmq")
	return defs
}

func mustURL(t *testing.T, k, v string) *url.URL {
	t.Helper()
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		t.Fatalf("%s=%q is not a URL with a host", k, v)
	}
	return u
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
