// Package migrations embeds the payment service's schema migrations.
package migrations

import "embed"

// FS holds the goose migrations, applied at start.
//
//go:embed *.sql
var FS embed.FS
