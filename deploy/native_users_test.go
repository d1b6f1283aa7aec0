package deploy

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	ordermigrations "github.com/checkout-demo/checkout/order/migrations"
	paymentmigrations "github.com/checkout-demo/checkout/payment/migrations"
)

// TestNativeUsers runs scripts/users.sh (what `make run` runs) twice against
// the machine's RabbitMQ and PostgreSQL, with fresh names in a fresh vhost:
// each service gets a broker user that can do its own work and nothing of
// another's, and a database role that owns its database, takes over what an
// earlier run as postgres made there, migrates it, and is no superuser.
func TestNativeUsers(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql is needed: %v", err)
	}
	vhostURL := testenv.VHost(t)
	vu, _ := url.Parse(vhostURL)
	prefix := testenv.Name("native")
	pgAdmin, _ := url.Parse(testenv.PostgresURL)

	env := os.Environ()
	userURL := map[string]string{}
	dbURL := map[string]string{}
	for _, svc := range []string{"order", "payment", "email"} {
		u := *vu
		u.User = url.UserPassword(prefix+"_"+svc, "pw-"+svc)
		userURL[svc] = u.String()
		env = append(env, strings.ToUpper(svc)+"_AMQP_URL="+u.String())
		if svc == "email" {
			continue
		}
		d := *pgAdmin
		d.User = url.UserPassword(prefix+"_"+svc+"_user", "pw-"+svc)
		d.Path = "/" + prefix + "_" + svc + "_db"
		dbURL[svc] = d.String()
		env = append(env, strings.ToUpper(svc)+"_DATABASE_URL="+d.String())
	}
	env = append(env, "PG_ADMIN_URL="+testenv.PostgresURL, "RABBITMQ_API="+testenv.RabbitAPI)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, testenv.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	t.Cleanup(func() {
		ctx := context.Background()
		for svc := range dbURL {
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+prefix+"_"+svc+"_db WITH (FORCE)")
			_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+prefix+"_"+svc+"_user")
		}
		for svc := range userURL {
			deleteRabbitUser(t, prefix+"_"+svc)
		}
	})
	// An earlier `make run` (before the roles) made order's database and
	// tables as postgres.
	orderDB := prefix + "_order_db"
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+orderDB); err != nil {
		t.Fatal(err)
	}
	old, err := pgx.Connect(ctx, strings.Replace(testenv.PostgresURL, "/postgres?", "/"+orderDB+"?", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(ctx, "CREATE TABLE earlier (id bigserial PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	old.Close(ctx)

	for run := 1; run <= 2; run++ {
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "users.sh"))
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("users.sh (run %d): %v\n%s", run, err, out)
		}
	}

	checkRoles(t, vhostURL, userURL)

	// The topology's policies on the vhost; testenv.VHost set them too, so
	// they are removed first and users.sh run again.
	vhost := strings.TrimPrefix(vu.Path, "/")
	for _, p := range events.Policies() {
		if err := rabbitAPI(http.MethodDelete, "/api/policies/"+url.PathEscape(vhost)+"/"+url.PathEscape(p.Name), ""); err != nil {
			t.Fatalf("delete policy %s: %v", p.Name, err)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "users.sh"))
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("users.sh: %v\n%s", err, out)
	}
	var set []struct {
		policy
		Name string
	}
	rabbitAPIGet(t, "/api/policies/"+url.PathEscape(vhost), &set)
	policies := map[string]policy{}
	for _, p := range set {
		policies[p.Name] = p.policy
	}
	comparePolicies(t, "users.sh", policies)

	for svc, u := range dbURL {
		t.Run(svc+"-db", func(t *testing.T) {
			role := prefix + "_" + svc + "_user"
			var super, createDB, createRole bool
			if err := admin.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = $1", role).
				Scan(&super, &createDB, &createRole); err != nil {
				t.Fatalf("role %s: %v", role, err)
			}
			if super || createDB || createRole {
				t.Errorf("role %s: superuser %v, createdb %v, createrole %v; want none", role, super, createDB, createRole)
			}
			var owner string
			if err := admin.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", prefix+"_"+svc+"_db").Scan(&owner); err != nil || owner != role {
				t.Errorf("database owner %q (%v), want %s", owner, err, role)
			}
			// The service's own start-up: create-if-missing and migrate, as its role.
			db, err := postgres.Open(u, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Pool.Close()
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := db.Prepare(pctx, map[string]fs.FS{"order": ordermigrations.FS, "payment": paymentmigrations.FS}[svc], slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
				t.Fatalf("migrate as %s: %v", role, err)
			}
			if svc == "order" {
				if _, err := db.Pool.Exec(ctx, "INSERT INTO earlier DEFAULT VALUES"); err != nil {
					t.Errorf("the table an earlier run made as postgres: %v", err)
				}
			}
			// Another service's database is closed to it.
			other := map[string]string{"order": "payment", "payment": "order"}[svc]
			ou, _ := url.Parse(dbURL[other])
			ou.User = url.UserPassword(role, "pw-"+svc)
			if c, err := pgx.Connect(ctx, ou.String()); err == nil {
				c.Close(ctx)
				t.Errorf("%s connects to %s's database", role, other)
			}
		})
	}
}
