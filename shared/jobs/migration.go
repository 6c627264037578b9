package jobs

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivershared/sqlctemplate"
)

// Schema is where River's tables live: private, which Supabase's Data API does not expose, so
// no portal user can read or change the queue through PostgREST. Every River client and
// migrator of this project is configured with it.
const Schema = "private"

// MigrationFile is the Supabase migration holding River's schema, relative to the repository
// root; `go run ./cmd/rivermigrations` writes it from RiverMigrationSQL.
const MigrationFile = "supabase/migrations/20261127000200_river.sql"

// addValueRE finds River's "add an enum label" statements (version 004 adds job state pending).
var addValueRE = regexp.MustCompile(`(?m)^ALTER TYPE (\S+) ADD VALUE IF NOT EXISTS '(\w+)' AFTER '(\w+)';`)

// RiverMigrationSQL renders every "main" line migration of the River version this module
// builds with, for schema, as one Supabase migration file. It uses River's own bundle
// (rivermigrate.AllVersions) and River's own template replacer, exactly as rivermigrate does
// before it runs a version, and ends by recording the versions in river_migration, so River's
// migrator (rivermigrate.Validate, `river migrate-up`) agrees the database is migrated and a
// later River upgrade only adds the new versions.
//
// One change is made to River's SQL, so the file can run in a single transaction (the Supabase
// CLI runs a file in one, and db.Migrate runs them all in one): Postgres refuses to use an
// enum label added by ALTER TYPE ... ADD VALUE before that transaction commits ("unsafe use of
// new value"), and River 006 uses the label 'pending' that 004 adds. So each label a later
// version adds is written into the enum's CREATE TYPE (at the same position), and the later
// ADD VALUE IF NOT EXISTS finds it there and does nothing. The resulting type is identical to
// River's. If River's SQL stops matching this shape, generation fails rather than guessing.
func RiverMigrationSQL(schema string) (string, error) {
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Schema: schema})
	if err != nil {
		return "", fmt.Errorf("river migrator: %w", err)
	}
	ctx := sqlctemplate.WithReplacements(context.Background(), map[string]sqlctemplate.Replacement{
		"schema": {Value: quoteIdent(schema) + "."},
	}, nil)
	replacer := &sqlctemplate.Replacer{}

	type version struct {
		number int
		name   string
		sql    string
	}
	var versions []version
	for _, m := range migrator.AllVersions() {
		sql := m.SQLUp
		if strings.Contains(sql, "/* TEMPLATE: schema */") { // as rivermigrate checks
			if sql, _, err = replacer.RunSafely(ctx, "$", sql, nil); err != nil {
				return "", fmt.Errorf("render river migration %03d: %w", m.Version, err)
			}
		}
		versions = append(versions, version{m.Version, m.Name, strings.TrimSpace(sql)})
	}

	// Fold each added enum label into the enum's CREATE TYPE (see the doc comment).
	for i, v := range versions {
		for _, add := range addValueRE.FindAllStringSubmatch(v.sql, -1) {
			typeName, label, after := add[1], add[2], add[3]
			folded := false
			for j := range versions[:i] {
				createRE := regexp.MustCompile(`(?s)CREATE TYPE ` + regexp.QuoteMeta(typeName) + ` AS ENUM\((.*?)\);`)
				loc := createRE.FindStringSubmatchIndex(versions[j].sql)
				if loc == nil {
					continue
				}
				labels := versions[j].sql[loc[2]:loc[3]]
				anchor := regexp.MustCompile(`'` + regexp.QuoteMeta(after) + `',?`)
				at := anchor.FindStringIndex(labels)
				if at == nil || strings.Contains(labels, "'"+label+"'") {
					return "", fmt.Errorf("fold label %s into %s: %w", label, typeName, ErrUnexpectedRiverSQL)
				}
				withLabel := labels[:at[0]] + "'" + after + "',\n  '" + label + "'" + strings.TrimPrefix(labels[at[0]:at[1]], "'"+after+"'") + labels[at[1]:]
				versions[j].sql = versions[j].sql[:loc[2]] + withLabel + versions[j].sql[loc[3]:]
				folded = true
				break
			}
			if !folded {
				return "", fmt.Errorf("fold label %s: no CREATE TYPE %s before version %03d: %w", label, typeName, v.number, ErrUnexpectedRiverSQL)
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, `-- River's job queue tables (github.com/riverqueue/river), versions %03d to %03d, in schema %s.
--
-- GENERATED FILE, do not edit: River's own "main" line migrations, rendered for the schema by
-- rivermigrate's bundle and River's SQL template replacer (shared/jobs.RiverMigrationSQL, which
-- explains the one change made: enum labels added by a later version are created with the enum,
-- so the whole file runs in one transaction). Regenerate after upgrading River
-- (TestRiverMigrationIsCurrent in shared/jobs fails until you do):
--
--     go run ./cmd/rivermigrations
--
-- This file has already run on every database: when an upgrade adds River versions, write them
-- to a NEW migration file instead (rivermigrate.GetVersion gives their SQL).
`, versions[0].number, versions[len(versions)-1].number, schema)
	var recorded []string
	for _, v := range versions {
		fmt.Fprintf(&b, "\n-- River migration %03d (%s)\n%s\n", v.number, v.name, v.sql)
		recorded = append(recorded, fmt.Sprintf("('main', %d)", v.number))
	}
	fmt.Fprintf(&b, "\n-- Record the versions, as rivermigrate does after applying each one.\n"+
		"insert into %s.river_migration (line, version) values %s on conflict do nothing;\n",
		quoteIdent(schema), strings.Join(recorded, ", "))
	return b.String(), nil
}

// quoteIdent quotes a schema name only when it needs it, as River's SafeIdentifier leaves
// plain lower-case names alone.
func quoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			plain = false
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
