// Package supabase carries the project's Supabase CLI folder into Go: the SQL migrations that
// `supabase db push` applies to a real project are the same files the tests and `make dev` apply.
package supabase

import "embed"

// Migrations holds supabase/migrations/*.sql, applied in file-name order.
//
//go:embed migrations/*.sql
var Migrations embed.FS
