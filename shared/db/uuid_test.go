package db_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// uuid.UUID goes to and comes from PostgreSQL as the same value whatever the column's type:
// a uuid (the native path), text (as its canonical string), an array, and NULL both ways.
func TestUUIDRoundTrip(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	id := uuid.New()

	var asText string
	var back, fromText uuid.UUID
	var ids []uuid.UUID
	var same bool
	require.NoError(t, pool.QueryRow(ctx, `select $1::uuid::text, $1::uuid, $2::text::uuid, array[$1::uuid, $1::uuid], $1::uuid = $3::text::uuid`,
		id, id, id.String()).Scan(&asText, &back, &fromText, &ids, &same))
	require.Equal(t, id.String(), asText)
	require.Equal(t, id, back)
	require.Equal(t, id, fromText)
	require.Equal(t, []uuid.UUID{id, id}, ids)
	require.True(t, same)

	// A uuid sent where text is expected, and text read into a uuid, as the Valuer and the
	// Scanner did before.
	var s string
	require.NoError(t, pool.QueryRow(ctx, `select $1::text`, id).Scan(&s))
	require.Equal(t, id.String(), s)
	var parsed uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `select $1::text`, id.String()).Scan(&parsed))
	require.Equal(t, id, parsed)

	// NULL: a nil *uuid.UUID is sent as NULL, and NULL reads as a nil pointer.
	var isNull bool
	var none *uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `select $1::uuid is null, null::uuid`, none).Scan(&isNull, &none))
	require.True(t, isNull)
	require.Nil(t, none)

	// A malformed text is an error, not a zero id.
	require.Error(t, pool.QueryRow(ctx, `select 'not-a-uuid'::text`).Scan(&parsed))
}
