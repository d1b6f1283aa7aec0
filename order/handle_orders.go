package main

import (
	"errors"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
)

// database names the order service's database in its problem answers.
const database = "the order database"

func handleCreateOrder(log *slog.Logger, store *Store, relay waker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				web.WriteProblem(w, r, http.StatusUnsupportedMediaType, "the request body must be application/json")
				return
			}
		}
		key := r.Header.Get(IdempotencyKeyHeader)
		if _, sent := r.Header[IdempotencyKeyHeader]; sent && !validKey(key) {
			web.WriteProblem(w, r, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters",
				web.FieldError{Field: IdempotencyKeyHeader, Message: "must be 1 to 255 printable ASCII characters"})
			return
		}
		c, err := readCredentials(r)
		if err != nil {
			web.WriteProblem(w, r, http.StatusBadRequest, err.Error())
			return
		}
		n, err := decodeNewOrder(r.Body, c.user)
		if err != nil {
			writeDecodeError(w, r, err)
			return
		}
		o, replayed, err := store.Create(r.Context(), n, key)
		if errors.Is(err, ErrKeyReused) {
			web.WriteProblem(w, r, http.StatusUnprocessableEntity, err.Error(),
				web.FieldError{Field: IdempotencyKeyHeader, Message: "was used before with a different request"})
			return
		}
		if err != nil {
			postgres.WriteError(w, r, log, database, "create order", err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		} else {
			relay.Wake()
		}
		ms := math.Round(float64(time.Since(start).Microseconds())) / 1000
		o.ProcessingDurationMS = &ms
		log.Info("order created", "order_id", o.ID, "request_id", web.RequestID(r.Context()),
			"total_amount", o.TotalAmount.String(), "items", len(o.Items))
		w.Header().Set("Location", "/orders/"+strconv.FormatInt(o.ID, 10))
		web.WriteJSON(w, http.StatusCreated, o)
	})
}

func handleGetOrder(log *slog.Logger, store *Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := web.OrderID(w, r, "id")
		if !ok {
			return
		}
		c, err := readCredentials(r)
		if err != nil {
			web.WriteProblem(w, r, http.StatusBadRequest, err.Error())
			return
		}
		if c.none() {
			writeUnauthorized(w, r)
			return
		}
		err = store.Opens(r.Context(), id, c)
		var o Order
		if err == nil {
			o, err = store.Get(r.Context(), id)
		}
		if errors.Is(err, ErrNotFound) {
			web.WriteProblem(w, r, http.StatusNotFound, "order "+strconv.FormatInt(id, 10)+" does not exist")
			return
		}
		if err != nil {
			postgres.WriteError(w, r, log, database, "get order", err)
			return
		}
		web.WriteJSON(w, http.StatusOK, o)
	})
}

func writeDecodeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		verr *ValidationError
		serr *SyntaxError
	)
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		web.WriteProblem(w, r, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, ErrUserMismatch):
		web.WriteProblem(w, r, http.StatusForbidden, err.Error(),
			web.FieldError{Field: "user_id", Message: "must be the signed-in customer's id, or left out"})
	case errors.As(err, &verr):
		web.WriteProblem(w, r, http.StatusUnprocessableEntity, verr.Error(), verr.Fields...)
	case errors.As(err, &serr):
		var fields []web.FieldError
		if serr.Field != "" {
			fields = append(fields, web.FieldError{Field: serr.Field, Message: serr.Detail})
		}
		web.WriteProblem(w, r, http.StatusBadRequest, serr.Detail, fields...)
	default:
		web.WriteProblem(w, r, http.StatusBadRequest, "invalid request")
	}
}
