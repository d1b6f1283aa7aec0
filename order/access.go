package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
)

// Access tokens. Each order has a random nonce (128 bits); its token is
// HMAC-SHA256(key, id, nonce), and only the token's SHA-256 is stored. The
// nonce makes the token unguessable whatever the key; the key makes the
// stored rows useless without it, and lets an Idempotency-Key replay give
// the client the same token again without the token being kept anywhere.
//
// The key is ACCESS_TOKEN_SECRET when set, else a random key that migration
// 00030 made in the database (shared by every replica, kept across
// restarts; but then a copy of the database is enough to derive tokens, so
// production sets the secret).

const nonceSize = 16

// ErrUserMismatch is a signed-in customer's checkout whose body names
// another user; it maps to 403.
var ErrUserMismatch = errors.New("user_id does not match the signed-in customer")

// tokenKey holds the HMAC key, loaded once.
type tokenKey struct {
	mu  sync.Mutex
	key []byte
}

func (s *Store) tokenKey(ctx context.Context) ([]byte, error) {
	s.key.mu.Lock()
	defer s.key.mu.Unlock()
	if s.key.key != nil {
		return s.key.key, nil
	}
	var k []byte
	if err := s.pool.QueryRow(ctx, `SELECT value FROM order_secrets WHERE name = 'access_token'`).Scan(&k); err != nil {
		return nil, fmt.Errorf("read the access token key: %w", err)
	}
	s.key.key = k
	return k, nil
}

// newAccess draws a nonce and derives the order's token.
func (s *Store) newAccess(ctx context.Context, id int64) (token string, nonce, hash []byte, err error) {
	key, err := s.tokenKey(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	nonce = make([]byte, nonceSize)
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	token = deriveToken(key, id, nonce)
	return token, nonce, hashToken(token), nil
}

// replayToken derives an existing order's token again; "" when the key
// changed since (the replay answers without one; the client still has the
// first answer's).
func (s *Store) replayToken(ctx context.Context, id int64, nonce, hash []byte) (string, error) {
	if nonce == nil {
		return "", nil // an order from before tokens existed
	}
	key, err := s.tokenKey(ctx)
	if err != nil {
		return "", err
	}
	token := deriveToken(key, id, nonce)
	if subtle.ConstantTimeCompare(hashToken(token), hash) != 1 {
		return "", nil
	}
	return token, nil
}

func deriveToken(key []byte, id int64, nonce []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "order-access-token\x00%d\x00", id)
	m.Write(nonce)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// Opens reports whether the credentials open the order: the token whose
// hash is stored, or the signed-in customer who placed it. An unknown order
// is ErrNotFound, like one the credentials do not open, so ids reveal
// nothing.
func (s *Store) Opens(ctx context.Context, id int64, c credentials) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var (
		hash  []byte
		owner *int64
	)
	err := s.pool.QueryRow(ctx, `SELECT token_hash, user_id FROM order_access WHERE order_id = $1`, id).Scan(&hash, &owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read order access: %w", err)
	}
	if c.token != "" && subtle.ConstantTimeCompare(hashToken(c.token), hash) == 1 {
		return nil
	}
	if c.user != 0 && owner != nil && *owner == c.user {
		return nil
	}
	return ErrNotFound
}

// OrderSummary is one line of a customer's order list.
type OrderSummary struct {
	ID          int64        `json:"id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	Status      string       `json:"status"`
	TotalAmount money.Amount `json:"total_amount"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
}

// maxListed bounds a customer's order list (newest first).
const maxListed = 100

// ListByUser returns the newest orders the signed-in customer placed.
func (s *Store) ListByUser(ctx context.Context, user int64) ([]OrderSummary, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `
		SELECT o.id, o.user_id, o.user_email, o.status, o.total_amount, o.created_at, o.updated_at
		FROM order_access a JOIN orders o ON o.id = a.order_id
		WHERE a.user_id = $1 ORDER BY a.order_id DESC LIMIT $2`, user, maxListed)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	orders, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OrderSummary, error) {
		var o OrderSummary
		err := row.Scan(&o.ID, &o.UserID, &o.UserEmail, &o.Status, &o.TotalAmount, &o.CreatedAt, &o.UpdatedAt)
		o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return orders, nil
}

// credentials are what a request may read an order with.
type credentials struct {
	token string // the order's access token (Authorization: Bearer)
	user  int64  // the signed-in customer, from the gateway's UserHeader
}

func (c credentials) none() bool { return c.token == "" && c.user == 0 }

// readCredentials parses the Authorization header (Bearer only; anything
// else counts as none) and UserHeader; a malformed UserHeader is an error.
func readCredentials(r *http.Request) (credentials, error) {
	var c credentials
	if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		c.token = strings.TrimSpace(tok)
	}
	if v := r.Header.Values(web.UserHeader); len(v) > 0 {
		id, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || id <= 0 || len(v) > 1 {
			return c, fmt.Errorf("%s must be one positive integer", web.UserHeader)
		}
		c.user = id
	}
	return c, nil
}

// writeUnauthorized is the answer to a request without credentials.
func writeUnauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="orders"`)
	web.WriteProblem(w, r, http.StatusUnauthorized,
		"send the order's access_token (from the checkout answer) as Authorization: Bearer <token>")
}

func handleListOrders(log *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := readCredentials(r)
		if err != nil {
			web.WriteProblem(w, r, http.StatusBadRequest, err.Error())
			return
		}
		if c.user == 0 {
			writeUnauthorized(w, r)
			return
		}
		orders, err := store.ListByUser(r.Context(), c.user)
		if err != nil {
			postgres.WriteError(w, r, log, database, "list orders", err)
			return
		}
		if orders == nil {
			orders = []OrderSummary{}
		}
		web.WriteJSON(w, http.StatusOK, map[string]any{"orders": orders})
	})
}
