package deploy

import (
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
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

// The seed's infrastructure containers and the host ports they publish
// (host -> target).
var composeInfra = map[string]map[string]uint32{
	"rabbitmq":   {"5672": 5672, "15672": 15672},
	"order-db":   {"5433": 5432},
	"payment-db": {"5434": 5432},
	"mailhog":    {"1026": 1025, "8026": 8025},
}

// composeServices maps the compose services, named as in the seed (its
// directories and its commands: `docker compose logs -f payment-service`),
// to the services the Makefile builds.
var composeServices = map[string]string{
	"api-gateway": "gateway", "order-service": "order", "payment-service": "payment", "email-service": "email",
}

// containerNames are the seed's container names, for what is never scaled
// (`docker exec -it microservices-order-db psql -U order_user -d order_db`).
var containerNames = map[string]string{
	"api-gateway": "microservices-gateway", "rabbitmq": "microservices-rabbitmq",
	"order-db": "microservices-order-db", "payment-db": "microservices-payment-db", "mailhog": "microservices-mailhog",
}

// scalable are the services docker-compose.scale.yml lets scale.
var scalable = []string{"order-service", "payment-service", "email-service"}

func TestCompose(t *testing.T) {
	p := composeProject(t)
	svcs := services(t)
	dfs := dockerfiles(t)

	if p.Name != "microservices" {
		t.Errorf("project name %q, want microservices (containers read microservices-…, as in the seed)", p.Name)
	}
	var want []string
	for name, svc := range composeServices {
		if _, ok := svcs[svc]; !ok {
			t.Errorf("compose service %s: no service %s in the Makefile", name, svc)
		}
		want = append(want, name)
	}
	for name := range composeInfra {
		want = append(want, name)
	}
	if got := p.ServiceNames(); !sameSet(got, want) || len(got) != 8 {
		t.Errorf("compose services in the default profile %v, want the seed's eight %v", got, want)
	}
	if len(svcs) != len(composeServices) {
		t.Errorf("the Makefile builds %d services, compose runs %d", len(svcs), len(composeServices))
	}

	for _, s := range p.Services {
		t.Run(s.Name, func(t *testing.T) {
			if want := containerNames[s.Name]; s.ContainerName != want {
				t.Errorf("container_name %q, want %q (a fixed name on a scalable service stops --scale)", s.ContainerName, want)
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
				if port.HostIP != "127.0.0.1" {
					t.Errorf("port %d binds to %q, want 127.0.0.1 by default (BIND_ADDRESS in .env)", port.Target, port.HostIP)
				}
			}
			if svc, ok := composeServices[s.Name]; ok {
				checkComposeService(t, p, s, svcs[svc], dfs[svc])
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
	if !slices.Contains(p.Services["mailhog"].Networks["default"].Aliases, "mailpit") {
		t.Error("mailhog has no network alias mailpit")
	}

	// The users and the exchange come from the definitions file.
	rabbit := p.Services["rabbitmq"]
	defs := rabbitDefinitions(t, p)
	if len(defs.Users) == 0 {
		t.Fatal("the RabbitMQ definitions declare no user (with definitions, RabbitMQ creates no default user)")
	}
	if u := defs.Users[0]; u.Name != "ecommerce" || u.Password != "ecommerce123" {
		t.Errorf("RabbitMQ user %s/%s with the committed .env, want the seed's ecommerce/ecommerce123 (for the management UI)", u.Name, u.Password)
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

	// No two services share a broker user or a database role.
	seen := map[string]string{}
	for name := range composeServices {
		env := composeEnv(t, p.Services[name])
		for _, k := range []string{"AMQP_URL", "DATABASE_URL"} {
			if v, ok := env[k]; ok {
				key := k + " " + mustURL(t, k, v).User.Username()
				if prev, dup := seen[key]; dup {
					t.Errorf("%s and %s share the %s user", prev, name, k)
				}
				seen[key] = name
			}
		}
	}
}

// TestComposeScale: with docker-compose.scale.yml the scalable services
// publish no fixed host port (a second replica could not bind it); the rest
// stays as it is.
func TestComposeScale(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(abs, "docker-compose.yml"), filepath.Join(abs, "docker-compose.scale.yml")},
		cli.WithWorkingDirectory(abs), cli.WithEnvFiles(filepath.Join(abs, ".env")), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml with docker-compose.scale.yml: %v", err)
	}
	base := composeProject(t)
	for _, s := range p.Services {
		if !slices.Contains(scalable, s.Name) {
			if !reflect.DeepEqual(s.Ports, base.Services[s.Name].Ports) {
				t.Errorf("%s: the scale file changes its ports", s.Name)
			}
			continue
		}
		if len(s.Ports) != 1 || s.Ports[0].Published != "" || s.Ports[0].HostIP != "127.0.0.1" ||
			s.Ports[0].Target != base.Services[s.Name].Ports[0].Target {
			t.Errorf("%s: ports %+v, want one with no fixed host port on 127.0.0.1 to the same target", s.Name, s.Ports)
		}
		if s.ContainerName != "" {
			t.Errorf("%s: container_name %q stops --scale", s.Name, s.ContainerName)
		}
	}
}

// TestComposeGrants holds the services' RabbitMQ users in compose's
// definitions to events.Topology on the machine's broker (see checkGrants).
func TestComposeGrants(t *testing.T) {
	p := composeProject(t)
	defs := rabbitDefinitions(t, p)
	grants := map[string]rabbitGrant{}
	for name, svc := range composeServices {
		v, ok := composeEnv(t, p.Services[name])["AMQP_URL"]
		if !ok {
			continue
		}
		user := mustURL(t, "AMQP_URL", v).User.Username()
		i := slices.IndexFunc(defs.Permissions, func(r rabbitPermission) bool { return r.User == user && r.VHost == "/" })
		if i < 0 {
			t.Fatalf("%s: no permissions for %s", name, user)
		}
		grants[svc] = defs.Permissions[i].rabbitGrant
	}
	if len(grants) != 3 {
		t.Fatalf("grants for %v, want order, payment and email", slices.Sorted(maps.Keys(grants)))
	}
	checkGrants(t, grants)
}

// checkComposeService holds one of the checkout's services to its code and
// its Dockerfile.
func checkComposeService(t *testing.T, p *types.Project, s types.ServiceConfig, svc service, df *dockerfile) {
	env := composeEnv(t, s)
	if env["LISTEN_HOST"] != "0.0.0.0" {
		t.Errorf("LISTEN_HOST %q, want 0.0.0.0: in a container the service must listen where the published port arrives", env["LISTEN_HOST"])
	}
	for k := range env {
		if !svc.Reads(k) {
			t.Errorf("environment sets %s, which %s does not read (its envconfig tags: %v)", k, svc.Name, slices.Sorted(maps.Keys(svc.Env)))
		}
	}
	port := svc.Port(env)
	if len(s.Ports) != 1 || strconv.Itoa(int(s.Ports[0].Target)) != port {
		t.Errorf("ports %+v, want one with target %s (where %s listens)", s.Ports, port, svc.Name)
	}
	if len(s.Ports) != 1 || s.Ports[0].Published != port {
		t.Errorf("ports %+v, want the seed's host port %s", s.Ports, port)
	}
	if s.Build == nil || filepath.Clean(s.Build.Dockerfile) != "Dockerfile" {
		t.Errorf("build %+v, want the repository's one Dockerfile", s.Build)
	} else if args := imageArgs(svc); s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != args["SERVICE"] ||
		s.Build.Args["PORT"] == nil || *s.Build.Args["PORT"] != args["PORT"] {
		t.Errorf("build args %v, want SERVICE=%s PORT=%s", s.Build.Args, args["SERVICE"], args["PORT"])
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
			role, rolePW, database := dbInit(t, p, db)
			if u.Port() != "5432" || u.User.Username() != role || pw != rolePW || strings.TrimPrefix(u.Path, "/") != database {
				t.Errorf("%s %s does not match the role, password and database %s's init script creates, or port 5432", k, v, db.Name)
			}
			if u.User.Username() == dbEnv["POSTGRES_USER"] {
				t.Errorf("%s connects as %s's superuser POSTGRES_USER", k, db.Name)
			}
		case k == "AMQP_URL":
			u := mustURL(t, k, v)
			needs(u.Hostname(), k)
			pw, _ := u.User.Password()
			defs := rabbitDefinitions(t, p)
			i := slices.IndexFunc(defs.Users, func(r rabbitUser) bool { return r.Name == u.User.Username() && r.Password == pw })
			if u.Port() != "5672" || i < 0 {
				t.Errorf("%s %s: no such user in the RabbitMQ definitions, or not port 5672", k, v)
			} else if len(defs.Users[i].Tags) != 0 {
				t.Errorf("%s: user %s has tags %v; a service's user needs none", k, u.User.Username(), defs.Users[i].Tags)
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
			if target, ok := services(t)[composeServices[u.Hostname()]]; !ok || u.Port() != target.Port(composeEnv(t, p.Services[u.Hostname()])) {
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
	Name     string   `json:"name"`
	Password string   `json:"password"`
	Tags     []string `json:"tags"`
}
type rabbitPermission struct {
	User  string `json:"user"`
	VHost string `json:"vhost"`
	rabbitGrant
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

// dbInit is the role, its password and the database that a PostgreSQL
// container's init script creates (CREATE ROLE … NOSUPERUSER, CREATE
// DATABASE … OWNER the role).
func dbInit(t *testing.T, p *types.Project, db types.ServiceConfig) (role, password, database string) {
	t.Helper()
	for _, c := range db.Configs {
		if !strings.HasPrefix(c.Target, "/docker-entrypoint-initdb.d/") {
			continue
		}
		sql := p.Configs[c.Source].Content
		r := regexp.MustCompile(`CREATE ROLE (\w+) LOGIN PASSWORD '([^']*)' NOSUPERUSER NOCREATEDB NOCREATEROLE;`).FindStringSubmatch(sql)
		d := regexp.MustCompile(`CREATE DATABASE (\w+) OWNER (\w+);`).FindStringSubmatch(sql)
		if r == nil || d == nil || d[2] != r[1] {
			t.Errorf("%s: the init script %s creates no role without superuser, CREATEDB and CREATEROLE owning a database:\n%s", db.Name, c.Target, sql)
			return
		}
		return r[1], r[2], d[1]
	}
	t.Errorf("%s: no init script in /docker-entrypoint-initdb.d/ creates the service's role", db.Name)
	return
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
