package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Migration is one file of supabase/migrations: `<version>_<name>.sql`.
type Migration struct {
	Version string
	Name    string
	SQL     string
}

// LoadMigrations reads every `*.sql` file of dir in fsys, ordered by version as the Supabase
// CLI orders them.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		base := strings.TrimSuffix(e.Name(), ".sql")
		version, name, ok := strings.Cut(base, "_")
		if !ok || version == "" || strings.Trim(version, "0123456789") != "" {
			return nil, fmt.Errorf("migration %q: name must be <digits>_<name>.sql", e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: version, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Checksum identifies a set of migrations (the test helper keys its template databases on it).
func Checksum(ms []Migration) string {
	h := sha256.New()
	for _, m := range ms {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", m.Version, m.Name, m.SQL)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Migrate applies the migrations not yet recorded, each in its own transaction, and records
// them in supabase_migrations.schema_migrations, the table the Supabase CLI keeps, so a
// database migrated here and one migrated by `supabase db push` agree on what has run.
// It returns the versions it applied. Concurrent runners serialise on an advisory lock taken
// in each migration's transaction, and re-check inside it, so no file runs twice.
func Migrate(ctx context.Context, b Beginner, ms []Migration) ([]string, error) {
	if err := Tx(ctx, b, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(7243901)`); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		_, err := tx.Exec(ctx, `
			create schema if not exists supabase_migrations;
			create table if not exists supabase_migrations.schema_migrations (
				version text primary key, statements text[], name text)`)
		if err != nil {
			return fmt.Errorf("create migrations table: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var applied []string
	for _, m := range ms {
		err := Tx(ctx, b, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(7243901)`); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
			var done bool
			if err := tx.QueryRow(ctx,
				`select exists (select 1 from supabase_migrations.schema_migrations where version = $1)`,
				m.Version).Scan(&done); err != nil {
				return fmt.Errorf("check migration %s: %w", m.Version, err)
			}
			if done {
				return nil
			}
			// Simple protocol: a migration is many statements, and may contain $$ bodies.
			if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("apply migration %s_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx,
				`insert into supabase_migrations.schema_migrations (version, name, statements) values ($1, $2, $3)`,
				m.Version, m.Name, []string{m.SQL}); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Version, err)
			}
			applied = append(applied, m.Version)
			return nil
		})
		if err != nil {
			return applied, err
		}
	}
	return applied, nil
}
