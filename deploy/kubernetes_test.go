package deploy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/checkout-demo/checkout/internal/events"
)

const kustomizeDir = "kubernetes"

// object is one rendered resource.
type object struct {
	Kind, Name, Namespace string
	YAML                  []byte
}

// rendered is one kustomization, built in-process like `kustomize build`.
type rendered struct {
	Dir     string
	Objects []object
}

func (r *rendered) all(kind string) []object {
	var out []object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r *rendered) get(kind, name string) (object, bool) {
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return object{}, false
}

// decode turns a rendered object into a (partial) typed value. Field names
// match case-insensitively (encoding/json), so few tags are needed.
func decode[T any](t *testing.T, o object) T {
	t.Helper()
	var v T
	if err := yaml.Unmarshal(o.YAML, &v); err != nil {
		t.Fatalf("decode %s %s: %v", o.Kind, o.Name, err)
	}
	return v
}

var renderCache sync.Map // dir -> *renderResult

type renderResult struct {
	once sync.Once
	r    *rendered
	err  error
}

// render builds the kustomization in dir with krusty, once per test run.
func render(dir string) (*rendered, error) {
	v, _ := renderCache.LoadOrStore(dir, &renderResult{})
	res := v.(*renderResult)
	res.once.Do(func() {
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
		if err != nil {
			res.err = err
			return
		}
		out := &rendered{Dir: dir}
		for _, r := range m.Resources() {
			b, err := r.AsYAML()
			if err != nil {
				res.err = err
				return
			}
			out.Objects = append(out.Objects, object{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace(), YAML: b})
		}
		res.r = out
	})
	return res.r, res.err
}

// overlays are the directories under kubernetes/overlays.
func overlays(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(kustomizeDir, "overlays", "*", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no overlays under kubernetes/overlays")
	}
	for i := range dirs {
		dirs[i] = filepath.Dir(dirs[i])
	}
	return dirs
}

func mustRender(t *testing.T, dir string) *rendered {
	t.Helper()
	r, err := render(dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return r
}

// Partial Kubernetes types: only the fields the checks read.

type intOrString string

func (v *intOrString) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*v = intOrString(s)
		return nil
	}
	*v = intOrString(strings.TrimSpace(string(b)))
	return nil
}

type labelSelector struct {
	MatchLabels      map[string]string
	MatchExpressions []struct {
		Key, Operator string
		Values        []string
	}
}

func (s labelSelector) matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

type probe struct {
	HTTPGet *struct {
		Path string
		Port intOrString
	}
}

type securityContext struct {
	RunAsNonRoot             *bool
	RunAsUser                *int64
	ReadOnlyRootFilesystem   *bool
	AllowPrivilegeEscalation *bool
	Capabilities             *struct{ Drop []string }
}

type container struct {
	Name, Image string
	Ports       []struct {
		Name          string
		ContainerPort int
	}
	Env []struct {
		Name, Value string
		ValueFrom   *struct {
			SecretKeyRef, ConfigMapKeyRef *struct{ Name, Key string }
			ResourceFieldRef              *struct{ Resource string }
		}
	}
	EnvFrom []struct {
		ConfigMapRef, SecretRef *struct{ Name string }
	}
	ReadinessProbe, LivenessProbe *probe
	Resources                     struct{ Requests, Limits map[string]string }
	SecurityContext               *securityContext
}

// port resolves a container port by name or number.
func (c container) port(p intOrString) (int, bool) {
	for _, cp := range c.Ports {
		if string(p) == cp.Name || string(p) == strconv.Itoa(cp.ContainerPort) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

type deployment struct {
	Spec struct {
		Replicas *int
		Template struct {
			Metadata struct{ Labels map[string]string }
			Spec     struct {
				SecurityContext *securityContext
				Containers      []container
			}
		}
	}
}

type k8sService struct {
	Spec struct {
		Type     string
		Selector map[string]string
		Ports    []struct {
			Name       string
			Port       int
			TargetPort intOrString
		}
	}
}

type networkPolicy struct {
	Spec struct {
		PodSelector labelSelector
		PolicyTypes []string
		Ingress     []struct {
			From []struct {
				PodSelector, NamespaceSelector *labelSelector
				IPBlock                        *struct{ CIDR string }
			}
			Ports []struct {
				Protocol string
				Port     *intOrString
			}
		}
	}
}

type cnpgCluster struct {
	Spec struct {
		EnableSuperuserAccess bool
		Bootstrap             struct {
			Initdb struct{ Database, Owner string }
		}
		PostgreSQL struct{ Parameters map[string]string }
	}
}

// secretData decodes a rendered Secret.
func secretData(t *testing.T, o object) map[string]string {
	t.Helper()
	s := decode[struct{ Data, StringData map[string]string }](t, o)
	out := maps.Clone(s.StringData)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range s.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("secret %s key %s: %v", o.Name, k, err)
		}
		out[k] = string(b)
	}
	return out
}

// cnpgSecretKeys are the keys CloudNativePG writes into <cluster>-app.
var cnpgSecretKeys = []string{"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"}

// A workload is one of the checkout's Deployments with what it is given.
type workload struct {
	Name      string
	Labels    map[string]string
	Container container
	// Env is every variable the container gets, with its value where the
	// rendered manifests (or an operator's documented convention) tell it.
	Env map[string]string
}

// workloads resolves the env of every checkout Deployment in r. Problems
// (unread variables, dangling references) are reported on t.
func workloads(t *testing.T, r *rendered, readme string) map[string]*workload {
	t.Helper()
	out := map[string]*workload{}
	for name, svc := range services(t) {
		o, ok := r.get("Deployment", name)
		if !ok {
			t.Errorf("no Deployment %s", name)
			continue
		}
		d := decode[deployment](t, o)
		var c *container
		for i := range d.Spec.Template.Spec.Containers {
			if d.Spec.Template.Spec.Containers[i].Name == name {
				c = &d.Spec.Template.Spec.Containers[i]
			}
		}
		if c == nil {
			t.Errorf("Deployment %s has no container %s", name, name)
			continue
		}
		w := &workload{Name: name, Labels: d.Spec.Template.Metadata.Labels, Container: *c, Env: map[string]string{}}
		set := func(k, v, from string) {
			if !svc.Reads(k) && !goRuntimeEnv[k] {
				t.Errorf("Deployment %s sets %s (%s), which %s does not read", name, k, from, name)
			}
			w.Env[k] = v
		}
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				cm, ok := r.get("ConfigMap", ef.ConfigMapRef.Name)
				if !ok {
					t.Errorf("Deployment %s: envFrom ConfigMap %s is not rendered", name, ef.ConfigMapRef.Name)
					continue
				}
				for k, v := range decode[struct{ Data map[string]string }](t, cm).Data {
					set(k, v, "ConfigMap "+cm.Name)
				}
			case ef.SecretRef != nil:
				if s, ok := r.get("Secret", ef.SecretRef.Name); ok {
					for k, v := range secretData(t, s) {
						set(k, v, "Secret "+s.Name)
					}
				} else if !documented(readme, ef.SecretRef.Name) {
					t.Errorf("Deployment %s: envFrom Secret %s is neither rendered nor documented in README.md", name, ef.SecretRef.Name)
				}
			}
		}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				set(e.Name, e.Value, "value")
			case e.ValueFrom.ResourceFieldRef != nil:
				set(e.Name, "", "resourceFieldRef")
			case e.ValueFrom.ConfigMapKeyRef != nil:
				ref := e.ValueFrom.ConfigMapKeyRef
				cm, ok := r.get("ConfigMap", ref.Name)
				v, found := decode[struct{ Data map[string]string }](t, cm).Data[ref.Key]
				if !ok || !found {
					t.Errorf("Deployment %s: %s from ConfigMap %s key %s, which is not rendered", name, e.Name, ref.Name, ref.Key)
				}
				set(e.Name, v, "ConfigMap "+ref.Name)
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				v, err := secretValue(t, r, ref.Name, ref.Key, readme)
				if err != nil {
					t.Errorf("Deployment %s: %s: %v", name, e.Name, err)
				}
				set(e.Name, v, "Secret "+ref.Name)
			}
		}
		out[name] = w
	}
	return out
}

// secretValue is the value of key in the Secret name: from a rendered
// Secret, from CloudNativePG's convention for <cluster>-app, or "" for a
// Secret that README.md says to create.
func secretValue(t *testing.T, r *rendered, name, key, readme string) (string, error) {
	t.Helper()
	if s, ok := r.get("Secret", name); ok {
		v, ok := secretData(t, s)[key]
		if !ok {
			return "", fmt.Errorf("Secret %s has no key %s", name, key)
		}
		return v, nil
	}
	for _, s := range r.all("Secret") {
		if base, ok := strings.CutPrefix(s.Name, name+"-"); ok && len(base) == 10 {
			return "", fmt.Errorf("Secret %s is generated as %s, but the reference was not rewritten (kustomize nameReference configuration)", name, s.Name)
		}
	}
	if cluster, ok := strings.CutSuffix(name, "-app"); ok {
		if o, ok := r.get("Cluster", cluster); ok {
			if !slices.Contains(cnpgSecretKeys, key) {
				return "", fmt.Errorf("CloudNativePG's Secret %s has no key %s", name, key)
			}
			c := decode[cnpgCluster](t, o)
			if key != "uri" {
				return "", nil
			}
			return fmt.Sprintf("postgresql://%s:generated@%s-rw.%s:5432/%s", c.Spec.Bootstrap.Initdb.Owner, cluster, o.Namespace, c.Spec.Bootstrap.Initdb.Database), nil
		}
	}
	if documented(readme, name) {
		return "", nil
	}
	return "", fmt.Errorf("Secret %s is neither rendered, nor CloudNativePG's, nor documented in README.md", name)
}

// documented reports whether README.md names the Secret as one to create.
func documented(readme, name string) bool { return strings.Contains(readme, "`"+name+"`") }

func readReadme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// How the checkout scales: consumers on queue depth, the rest on CPU.
var wantAutoscaling = map[string]string{"gateway": "cpu", "order": "cpu", "payment": "queue", "email": "queue"}

func TestKustomize(t *testing.T) {
	readme := readReadme(t)
	mustRender(t, filepath.Join(kustomizeDir, "base"))
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := mustRender(t, dir)
			ws := workloads(t, r, readme)
			if len(ws) != len(services(t)) {
				t.Fatalf("found %d of the %d services' Deployments", len(ws), len(services(t)))
			}
			for _, w := range ws {
				checkWorkload(t, r, w)
			}
			checkAutoscaling(t, r, ws)
			checkExposure(t, r)
			checkBroker(t, r, ws)
			checkDatabases(t, r, ws)
			checkNetworkPolicies(t, r, ws)
		})
	}
}

// checkWorkload holds one Deployment and its Service to the service's code.
func checkWorkload(t *testing.T, r *rendered, w *workload) {
	svc := services(t)[w.Name]
	c := w.Container
	port, _ := strconv.Atoi(svc.Port(w.Env))
	if _, ok := c.port(intOrString(strconv.Itoa(port))); !ok {
		t.Errorf("%s: container ports %+v, the service listens on %d", w.Name, c.Ports, port)
	}
	if c.Image == "" || !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("%s: image %q, want a pinned tag", w.Name, c.Image)
	}
	for what, pr := range map[string]struct {
		p    *probe
		path string
	}{"readinessProbe": {c.ReadinessProbe, "/readyz"}, "livenessProbe": {c.LivenessProbe, "/livez"}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s", w.Name, what)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s: %s path %s, want %s", w.Name, what, pr.p.HTTPGet.Path, pr.path)
		}
		if p, ok := c.port(pr.p.HTTPGet.Port); !ok || p != port {
			t.Errorf("%s: %s port %s, the service listens on %d", w.Name, what, pr.p.HTTPGet.Port, port)
		}
	}
	for _, res := range []string{"cpu", "memory"} {
		if c.Resources.Requests[res] == "" || c.Resources.Limits[res] == "" {
			t.Errorf("%s: %s request %q, limit %q: want both", w.Name, res, c.Resources.Requests[res], c.Resources.Limits[res])
		}
	}
	o, _ := r.get("Deployment", w.Name)
	d := decode[deployment](t, o)
	pod, ctr := d.Spec.Template.Spec.SecurityContext, c.SecurityContext
	nonRoot := (ctr != nil && ctr.RunAsNonRoot != nil && *ctr.RunAsNonRoot) || (pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot && (ctr == nil || ctr.RunAsNonRoot == nil))
	if !nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", w.Name)
	}
	if ctr == nil || ctr.ReadOnlyRootFilesystem == nil || !*ctr.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", w.Name)
	}
	if ctr == nil || ctr.AllowPrivilegeEscalation == nil || *ctr.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", w.Name)
	}
	if ctr == nil || ctr.Capabilities == nil || !slices.Contains(ctr.Capabilities.Drop, "ALL") {
		t.Errorf("%s: capabilities do not drop ALL", w.Name)
	}

	// The Service other workloads use: named after the service, on its port.
	so, ok := r.get("Service", w.Name)
	if !ok {
		t.Errorf("no Service %s", w.Name)
		return
	}
	s := decode[k8sService](t, so)
	if !(labelSelector{MatchLabels: s.Spec.Selector}).matches(w.Labels) || len(s.Spec.Selector) == 0 {
		t.Errorf("Service %s selects %v, not the pods (%v)", w.Name, s.Spec.Selector, w.Labels)
	}
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != port {
		t.Errorf("Service %s ports %+v, want port %d", w.Name, s.Spec.Ports, port)
	} else if p, ok := c.port(s.Spec.Ports[0].TargetPort); !ok || p != port {
		t.Errorf("Service %s targetPort %s does not reach port %d", w.Name, s.Spec.Ports[0].TargetPort, port)
	}
}

// checkAutoscaling: gateway and order on CPU (HPA), payment and email on the
// depth of the queue they consume (KEDA), one autoscaler each, and no fixed
// replicas to fight it.
func checkAutoscaling(t *testing.T, r *rendered, ws map[string]*workload) {
	got := map[string][]string{}
	maxReplicas := map[string]int{}
	for _, o := range r.all("HorizontalPodAutoscaler") {
		h := decode[struct {
			Spec struct {
				ScaleTargetRef struct{ Kind, Name string }
				MaxReplicas    int
				Metrics        []struct {
					Type     string
					Resource *struct{ Name string }
				}
			}
		}](t, o)
		target := h.Spec.ScaleTargetRef
		if target.Kind != "Deployment" {
			continue
		}
		got[target.Name] = append(got[target.Name], "hpa")
		maxReplicas[target.Name] = h.Spec.MaxReplicas
		if !slices.ContainsFunc(h.Spec.Metrics, func(m struct {
			Type     string
			Resource *struct{ Name string }
		}) bool {
			return m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu"
		}) {
			t.Errorf("HPA %s does not scale on CPU", o.Name)
		}
	}
	for _, o := range r.all("ScaledObject") {
		so := decode[struct {
			Spec struct {
				ScaleTargetRef  struct{ Name string }
				MaxReplicaCount int
				Triggers        []struct {
					Type              string
					Metadata          map[string]string
					AuthenticationRef *struct{ Name string }
				}
			}
		}](t, o)
		name := so.Spec.ScaleTargetRef.Name
		got[name] = append(got[name], "keda")
		maxReplicas[name] = so.Spec.MaxReplicaCount
		svc, ok := services(t)[name]
		if !ok {
			t.Errorf("ScaledObject %s scales %s, which is not a service", o.Name, name)
			continue
		}
		if len(so.Spec.Triggers) == 0 {
			t.Errorf("ScaledObject %s has no trigger", o.Name)
		}
		for _, tr := range so.Spec.Triggers {
			if tr.Type != "rabbitmq" {
				t.Errorf("ScaledObject %s: trigger %s, want rabbitmq", o.Name, tr.Type)
				continue
			}
			if q := tr.Metadata["queueName"]; !slices.Contains(svc.Queues, q) {
				t.Errorf("ScaledObject %s watches queue %q; %s consumes %v", o.Name, q, name, svc.Queues)
			}
			if _, err := strconv.Atoi(tr.Metadata["value"]); err != nil || tr.Metadata["mode"] != "QueueLength" {
				t.Errorf("ScaledObject %s: mode %q value %q, want QueueLength and a number", o.Name, tr.Metadata["mode"], tr.Metadata["value"])
			}
			if tr.AuthenticationRef == nil {
				t.Errorf("ScaledObject %s: no authenticationRef", o.Name)
				continue
			}
			ta, ok := r.get("TriggerAuthentication", tr.AuthenticationRef.Name)
			if !ok {
				t.Errorf("ScaledObject %s: TriggerAuthentication %s is not rendered", o.Name, tr.AuthenticationRef.Name)
				continue
			}
			for _, ref := range decode[struct {
				Spec struct {
					SecretTargetRef []struct{ Parameter, Name, Key string }
				}
			}](t, ta).Spec.SecretTargetRef {
				v, err := secretValue(t, r, ref.Name, ref.Key, readReadme(t))
				if err != nil {
					t.Errorf("TriggerAuthentication %s: %v", ta.Name, err)
				}
				if ref.Parameter == "host" && v != "" {
					checkKEDAUser(t, r, v, ws)
				}
			}
		}
	}
	for name, want := range wantAutoscaling {
		wantKind := map[string]string{"cpu": "hpa", "queue": "keda"}[want]
		if !slices.Equal(got[name], []string{wantKind}) {
			t.Errorf("%s is scaled by %v, want exactly one %s (on %s)", name, got[name], wantKind, want)
		}
		if o, ok := r.get("Deployment", name); ok && decode[deployment](t, o).Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas, which fights its autoscaler on every apply", name)
		}
	}
	// Each replica holds up to DB_MAX_CONNS connections, one more replica
	// during a rolling update: all must fit in max_connections.
	for _, w := range ws {
		cluster := dbCluster(w)
		if cluster == "" {
			continue
		}
		o, ok := r.get("Cluster", cluster)
		if !ok {
			continue
		}
		maxConns, _ := strconv.Atoi(decode[cnpgCluster](t, o).Spec.PostgreSQL.Parameters["max_connections"])
		if maxConns == 0 {
			maxConns = 100
		}
		perPod, _ := strconv.Atoi(services(t)[w.Name].envOr(w.Env, "DB_MAX_CONNS"))
		if need := (maxReplicas[w.Name] + 1) * perPod; need > maxConns-10 {
			t.Errorf("%s: up to %d replicas x %d connections need %d, %s allows %d (less 10 for superusers and the operator)",
				w.Name, maxReplicas[w.Name]+1, perPod, need, cluster, maxConns)
		}
	}
}

// dbCluster is the CloudNativePG Cluster a workload's DATABASE_URL names.
func dbCluster(w *workload) string {
	u, err := url.Parse(w.Env["DATABASE_URL"])
	if err != nil {
		return ""
	}
	host, _, _ := strings.Cut(u.Hostname(), ".")
	cluster, ok := strings.CutSuffix(host, "-rw")
	if !ok {
		return ""
	}
	return cluster
}

// checkExposure: only the gateway is reachable from outside the cluster.
func checkExposure(t *testing.T, r *rendered) {
	for _, o := range r.all("Service") {
		if typ := decode[k8sService](t, o).Spec.Type; (typ == "LoadBalancer" || typ == "NodePort") && o.Name != "gateway" {
			t.Errorf("Service %s is of type %s: only the gateway may be reachable from outside", o.Name, typ)
		}
	}
	ingresses := r.all("Ingress")
	if len(ingresses) == 0 {
		t.Error("no Ingress for the gateway")
	}
	for _, o := range ingresses {
		ing := decode[struct {
			Spec struct {
				Rules []struct {
					HTTP *struct {
						Paths []struct {
							Path    string
							Backend struct{ Service *struct{ Name string } }
						}
					}
				}
			}
		}](t, o)
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for _, p := range rule.HTTP.Paths {
				if p.Backend.Service == nil || p.Backend.Service.Name != "gateway" {
					t.Errorf("Ingress %s routes %s to %+v: only the gateway may be reachable from outside", o.Name, p.Path, p.Backend.Service)
				}
			}
		}
	}
}

// checkBroker: the services' AMQP URL names the RabbitmqCluster's Service,
// and a user the Messaging Topology Operator creates with the same password,
// with permissions on the URL's vhost; the exchange is declared.
func checkBroker(t *testing.T, r *rendered, ws map[string]*workload) {
	readme := readReadme(t)
	for _, w := range ws {
		v, ok := w.Env["AMQP_URL"]
		if !ok {
			if services(t)[w.Name].Reads("AMQP_URL") {
				t.Errorf("%s reads AMQP_URL but the Deployment does not set it (it would use localhost)", w.Name)
			}
			continue
		}
		if v == "" {
			continue // a Secret to create by hand
		}
		u := mustURL(t, w.Name+" AMQP_URL", v)
		host, _, _ := strings.Cut(u.Hostname(), ".")
		if _, ok := r.get("RabbitmqCluster", host); !ok {
			t.Errorf("%s: AMQP_URL host %s is no RabbitmqCluster", w.Name, host)
		}
		pw, _ := u.User.Password()
		found := false
		for _, o := range r.all("User") {
			user := decode[struct {
				Spec struct{ ImportCredentialsSecret struct{ Name string } }
			}](t, o)
			name, _ := secretValue(t, r, user.Spec.ImportCredentialsSecret.Name, "username", readme)
			pass, _ := secretValue(t, r, user.Spec.ImportCredentialsSecret.Name, "password", readme)
			found = found || (name == u.User.Username() && pass == pw)
		}
		if !found {
			t.Errorf("%s: no RabbitMQ User with the credentials of AMQP_URL %s", w.Name, v)
		}
		vhost := strings.TrimPrefix(u.Path, "/")
		if vhost == "" {
			vhost = "/"
		}
		if !slices.ContainsFunc(r.all("Permission"), func(o object) bool {
			p := decode[struct{ Spec struct{ User, VHost string } }](t, o)
			return p.Spec.User == u.User.Username() && p.Spec.VHost == vhost
		}) {
			t.Errorf("%s: user %s has no Permission on vhost %s", w.Name, u.User.Username(), vhost)
		}
	}
	if !slices.ContainsFunc(r.all("Exchange"), func(o object) bool {
		e := decode[struct {
			Spec struct {
				Name, Type string
				Durable    bool
			}
		}](t, o)
		return e.Spec.Name == events.Exchange && e.Spec.Type == "topic" && e.Spec.Durable
	}) {
		t.Errorf("no Exchange %s (topic, durable)", events.Exchange)
	}
}

// checkKEDAUser: KEDA connects as a user of its own, with a Permission, that
// no service uses.
func checkKEDAUser(t *testing.T, r *rendered, amqpURL string, ws map[string]*workload) {
	t.Helper()
	user := mustURL(t, "KEDA host", amqpURL).User.Username()
	for _, w := range ws {
		if v := w.Env["AMQP_URL"]; v != "" && mustURL(t, w.Name+" AMQP_URL", v).User.Username() == user {
			t.Errorf("KEDA connects as %s, the user of %s", user, w.Name)
		}
	}
	if _, ok := permissions(t, r)[user]; !ok {
		t.Errorf("KEDA's user %s has no Permission", user)
	}
}

// permissions are the rendered Permissions on vhost /, by user.
func permissions(t *testing.T, r *rendered) map[string]rabbitGrant {
	t.Helper()
	out := map[string]rabbitGrant{}
	for _, o := range r.all("Permission") {
		p := decode[struct {
			Spec struct {
				User, VHost string
				Permissions rabbitGrant
			}
		}](t, o)
		if p.Spec.VHost == "/" {
			out[p.Spec.User] = p.Spec.Permissions
		}
	}
	return out
}

// TestKubernetesGrants holds the Permissions of the services' and KEDA's
// users to events.Topology on the machine's broker (see checkGrants), and
// no two workloads share a user.
func TestKubernetesGrants(t *testing.T) {
	r := mustRender(t, filepath.Join(kustomizeDir, "overlays", "dev"))
	ws := workloads(t, r, readReadme(t))
	perms := permissions(t, r)
	grants := map[string]rabbitGrant{}
	owner := map[string]string{}
	for _, w := range ws {
		if w.Env["LISTEN_HOST"] != "0.0.0.0" {
			t.Errorf("%s: LISTEN_HOST %q, want 0.0.0.0 (the Service and the probes reach the pod IP)", w.Name, w.Env["LISTEN_HOST"])
		}
		v := w.Env["AMQP_URL"]
		if v == "" {
			continue
		}
		user := mustURL(t, w.Name+" AMQP_URL", v).User.Username()
		if prev, ok := owner[user]; ok {
			t.Errorf("%s and %s share the RabbitMQ user %s", prev, w.Name, user)
		}
		owner[user] = w.Name
		g, ok := perms[user]
		if !ok {
			t.Fatalf("%s: no Permission for %s", w.Name, user)
		}
		grants[w.Name] = g
	}
	for _, o := range r.all("TriggerAuthentication") {
		for _, ref := range decode[struct {
			Spec struct {
				SecretTargetRef []struct{ Parameter, Name, Key string }
			}
		}](t, o).Spec.SecretTargetRef {
			if ref.Parameter != "host" {
				continue
			}
			v, err := secretValue(t, r, ref.Name, ref.Key, readReadme(t))
			if err != nil || v == "" {
				t.Fatalf("TriggerAuthentication %s: host %q: %v", o.Name, v, err)
			}
			grants[kedaRole] = perms[mustURL(t, "KEDA host", v).User.Username()]
		}
	}
	if len(grants) != 4 {
		t.Fatalf("grants for %v, want order, payment, email and keda", slices.Sorted(maps.Keys(grants)))
	}
	checkGrants(t, grants)
}

// checkDatabases: each service with a database has its own CloudNativePG
// Cluster, with a database and an owner.
func checkDatabases(t *testing.T, r *rendered, ws map[string]*workload) {
	owner := map[string]string{}
	for _, w := range ws {
		if !services(t)[w.Name].Reads("DATABASE_URL") {
			continue
		}
		cluster := dbCluster(w)
		o, ok := r.get("Cluster", cluster)
		if !ok {
			t.Errorf("%s: DATABASE_URL %q names no CloudNativePG Cluster", w.Name, w.Env["DATABASE_URL"])
			continue
		}
		if prev, ok := owner[cluster]; ok {
			t.Errorf("%s and %s share the database cluster %s", prev, w.Name, cluster)
		}
		owner[cluster] = w.Name
		c := decode[cnpgCluster](t, o)
		if c.Spec.Bootstrap.Initdb.Database == "" || c.Spec.Bootstrap.Initdb.Owner == "" {
			t.Errorf("Cluster %s: bootstrap.initdb needs a database and an owner", cluster)
		}
		// The owner CloudNativePG creates is no superuser; its superuser
		// stays disabled (the default), and no service uses it.
		if c.Spec.EnableSuperuserAccess {
			t.Errorf("Cluster %s: enableSuperuserAccess: the services' database must have no superuser login", cluster)
		}
		if u, err := url.Parse(w.Env["DATABASE_URL"]); err == nil && (u.User.Username() == "postgres" || u.User.Username() != c.Spec.Bootstrap.Initdb.Owner) {
			t.Errorf("%s connects as %q, want the database's owner %s", w.Name, u.User.Username(), c.Spec.Bootstrap.Initdb.Owner)
		}
	}
}

// A pod, as far as NetworkPolicies care.
type pod struct {
	What      string
	Namespace string
	Labels    map[string]string
	Ports     map[int]string // number -> name
}

// namespaces outside the checkout's, as the NetworkPolicies name them.
var outside = map[string]map[string]string{
	"ingress-nginx":   {"app.kubernetes.io/name": "ingress-nginx"},
	"keda":            {"app": "keda-operator"},
	"rabbitmq-system": {"app.kubernetes.io/name": "messaging-topology-operator"},
	"cnpg-system":     {"app.kubernetes.io/name": "cloudnative-pg"},
	"elsewhere":       {"app": "anything"},
}

// pods lists the pods the rendered manifests lead to: the Deployments', and
// those the operators create, with the labels they document.
func pods(t *testing.T, r *rendered) []pod {
	t.Helper()
	var out []pod
	for _, o := range r.all("Deployment") {
		d := decode[deployment](t, o)
		p := pod{What: "Deployment " + o.Name, Namespace: o.Namespace, Labels: d.Spec.Template.Metadata.Labels, Ports: map[int]string{}}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, cp := range c.Ports {
				p.Ports[cp.ContainerPort] = cp.Name
			}
		}
		out = append(out, p)
	}
	for _, o := range r.all("RabbitmqCluster") {
		out = append(out, pod{What: "RabbitmqCluster " + o.Name, Namespace: o.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": o.Name, "app.kubernetes.io/component": "rabbitmq", "app.kubernetes.io/part-of": "rabbitmq"},
			Ports:  map[int]string{5672: "amqp", 15672: "management", 4369: "epmd", 25672: "cluster-rpc"}})
	}
	for _, o := range r.all("Cluster") {
		out = append(out, pod{What: "Cluster " + o.Name, Namespace: o.Namespace,
			Labels: map[string]string{"cnpg.io/cluster": o.Name, "cnpg.io/instanceRole": "primary", "role": "primary"},
			Ports:  map[int]string{5432: "postgresql", 8000: "status", 9187: "metrics"}})
	}
	for ns, labels := range outside {
		out = append(out, pod{What: "a pod in " + ns, Namespace: ns, Labels: labels})
	}
	return out
}

// allowed evaluates the rendered NetworkPolicies for a TCP connection.
func allowed(t *testing.T, r *rendered, from, to pod, port int) bool {
	t.Helper()
	selected := false
	for _, o := range r.all("NetworkPolicy") {
		if o.Namespace != to.Namespace {
			continue
		}
		np := decode[networkPolicy](t, o)
		if !np.Spec.PodSelector.matches(to.Labels) {
			continue
		}
		if len(np.Spec.PolicyTypes) > 0 && !slices.Contains(np.Spec.PolicyTypes, "Ingress") {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			peerOK := len(rule.From) == 0
			for _, peer := range rule.From {
				switch {
				case peer.IPBlock != nil:
					// Addresses, not pods: the checks here reason about pods.
				case peer.NamespaceSelector != nil && peer.PodSelector != nil:
					peerOK = peerOK || (peer.NamespaceSelector.matches(nsLabels(from.Namespace)) && peer.PodSelector.matches(from.Labels))
				case peer.NamespaceSelector != nil:
					peerOK = peerOK || peer.NamespaceSelector.matches(nsLabels(from.Namespace))
				case peer.PodSelector != nil:
					peerOK = peerOK || (from.Namespace == to.Namespace && peer.PodSelector.matches(from.Labels))
				}
			}
			portOK := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				if p.Protocol != "" && p.Protocol != "TCP" {
					continue
				}
				portOK = portOK || p.Port == nil || string(*p.Port) == strconv.Itoa(port) || (to.Ports[port] != "" && string(*p.Port) == to.Ports[port])
			}
			if peerOK && portOK {
				return true
			}
		}
	}
	return !selected
}

func nsLabels(ns string) map[string]string {
	return map[string]string{"kubernetes.io/metadata.name": ns}
}

// An edge is a connection the system needs.
type edge struct {
	From, To string // pod descriptions
	Port     int
	Why      string
}

// checkNetworkPolicies derives the connections the system needs from the
// configuration (URLs, hosts and ports the services are given, KEDA's and
// the ingress controller's) and holds the NetworkPolicies to exactly those
// for the checkout's pods: everything needed is allowed, nothing else from
// a checkout pod or from outside the namespace reaches them or their
// databases and broker.
func checkNetworkPolicies(t *testing.T, r *rendered, ws map[string]*workload) {
	all := pods(t, r)
	byWhat := map[string]pod{}
	for _, p := range all {
		byWhat[p.What] = p
	}
	ns := byWhat["Deployment gateway"].Namespace
	if len(r.all("NetworkPolicy")) == 0 {
		t.Fatal("no NetworkPolicies")
	}

	// resolve names the pods and port behind host:port in the namespace.
	resolve := func(host string, port int) (string, int, bool) {
		host, _, _ = strings.Cut(host, ".")
		if so, ok := r.get("Service", host); ok {
			s := decode[k8sService](t, so)
			for _, p := range all {
				if p.Namespace == ns && len(s.Spec.Selector) > 0 && (labelSelector{MatchLabels: s.Spec.Selector}).matches(p.Labels) {
					for _, sp := range s.Spec.Ports {
						if sp.Port != port {
							continue
						}
						for n, name := range p.Ports {
							if string(sp.TargetPort) == name || string(sp.TargetPort) == strconv.Itoa(n) {
								return p.What, n, true
							}
						}
					}
				}
			}
			return "", 0, false
		}
		if _, ok := r.get("RabbitmqCluster", host); ok {
			return "RabbitmqCluster " + host, port, true
		}
		if c, ok := strings.CutSuffix(host, "-rw"); ok {
			if _, ok := r.get("Cluster", c); ok {
				return "Cluster " + c, port, true
			}
		}
		return "", 0, false
	}

	var need []edge
	for _, w := range ws {
		from := "Deployment " + w.Name
		for k, v := range w.Env {
			host, portStr := "", ""
			clusters := r.all("RabbitmqCluster")
			if k == "AMQP_URL" && v == "" && len(clusters) == 1 {
				// A Secret made by hand, as README.md describes it.
				v = "amqp://" + clusters[0].Name + ":5672/"
			}
			if k == "SMTP_HOST" {
				host, portStr = v, services(t)[w.Name].envOr(w.Env, "SMTP_PORT")
			} else if u, err := url.Parse(v); err == nil && u.Host != "" {
				host, portStr = u.Hostname(), u.Port()
				if portStr == "" {
					portStr = map[string]string{"amqp": "5672", "postgres": "5432", "postgresql": "5432", "http": "80"}[u.Scheme]
				}
			} else {
				continue
			}
			port, _ := strconv.Atoi(portStr)
			to, toPort, ok := resolve(host, port)
			if !ok {
				if k != "SMTP_HOST" || net.ParseIP(host) != nil {
					t.Errorf("%s: %s=%s names nothing in the cluster", w.Name, k, v)
				}
				continue // an outside SMTP relay
			}
			need = append(need, edge{from, to, toPort, k})
		}
	}
	for _, o := range r.all("RabbitmqCluster") {
		need = append(need, edge{"a pod in keda", "RabbitmqCluster " + o.Name, 5672, "KEDA's RabbitMQ scaler"})
	}
	gw := byWhat["Deployment gateway"]
	gwPort, _ := strconv.Atoi(services(t)["gateway"].Port(ws["gateway"].Env))
	need = append(need, edge{"a pod in ingress-nginx", gw.What, gwPort, "the Ingress"})

	for _, e := range need {
		if !allowed(t, r, byWhat[e.From], byWhat[e.To], e.Port) {
			t.Errorf("NetworkPolicies block %s -> %s:%d (%s)", e.From, e.To, e.Port, e.Why)
		}
	}
	if len(need) < 8 {
		t.Errorf("only %d connections derived from the configuration: %+v", len(need), need)
	}

	// Nothing else: from the checkout's pods and from outside the namespace,
	// every other connection to a pod of the namespace is blocked.
	var sources []pod
	for _, w := range ws {
		sources = append(sources, byWhat["Deployment "+w.Name])
	}
	for nsName := range outside {
		if nsName != "rabbitmq-system" && nsName != "cnpg-system" { // the operators reach what they manage
			sources = append(sources, byWhat["a pod in "+nsName])
		}
	}
	for _, from := range sources {
		for _, to := range all {
			if to.Namespace != ns || to.What == from.What {
				continue
			}
			for port := range to.Ports {
				if !allowed(t, r, from, to, port) {
					continue
				}
				if !slices.ContainsFunc(need, func(e edge) bool { return e.From == from.What && e.To == to.What && e.Port == port }) {
					t.Errorf("NetworkPolicies allow %s -> %s:%d, which nothing needs", from.What, to.What, port)
				}
			}
		}
	}
}

// probePaths are the HTTP probe paths the overlays give each service.
func probePaths(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, dir := range overlays(t) {
		r := mustRender(t, dir)
		for name := range services(t) {
			o, ok := r.get("Deployment", name)
			if !ok {
				continue
			}
			for _, c := range decode[deployment](t, o).Spec.Template.Spec.Containers {
				for _, p := range []*probe{c.ReadinessProbe, c.LivenessProbe} {
					if p != nil && p.HTTPGet != nil && !slices.Contains(out[name], p.HTTPGet.Path) {
						out[name] = append(out[name], p.HTTPGet.Path)
					}
				}
			}
		}
	}
	return out
}
