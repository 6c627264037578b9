// Command rivermigrations writes River's schema as a Supabase migration
// (supabase/migrations/20261127000200_river.sql), rendered from the River version in go.mod for
// schema private by shared/jobs.RiverMigrationSQL. Run it from the repository root:
//
//	go run ./cmd/rivermigrations          # rewrite the file
//	go run ./cmd/rivermigrations -check   # exit 1 if the file is stale
//
// The file has already run on every database: when a River upgrade adds versions, do not
// rewrite it; put the new versions' SQL (rivermigrate's GetVersion) in a new migration file.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/portal-functions/portal-functions/shared/jobs"
)

func main() {
	check := flag.Bool("check", false, "only report whether the file is current")
	out := flag.String("o", jobs.MigrationFile, "file to write")
	flag.Parse()
	sql, err := jobs.RiverMigrationSQL(jobs.Schema)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rivermigrations:", err)
		os.Exit(1)
	}
	if *check {
		current, err := os.ReadFile(*out)
		if err != nil || !bytes.Equal(current, []byte(sql)) {
			fmt.Fprintf(os.Stderr, "rivermigrations: %s is not what River generates; run go run ./cmd/rivermigrations\n", *out)
			os.Exit(1)
		}
		return
	}
	if err := os.WriteFile(*out, []byte(sql), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "rivermigrations:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out)
}
