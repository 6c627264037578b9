package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
)

type bundle struct {
	fake   *storagefake.TestServer
	client *storage.Client
}

func setup(t *testing.T, timeout time.Duration) bundle {
	t.Helper()
	fake := storagefake.NewTest(t, storagefake.DefaultServiceKey)
	c, err := storage.New(storage.Config{
		SupabaseURL:    fake.URL(),
		ServiceRoleKey: config.Secret(storagefake.DefaultServiceKey),
		Bucket:         "ticket-attachments",
		Timeout:        timeout,
	})
	require.NoError(t, err)
	return bundle{fake: fake, client: c}
}

func TestUploadThenDownloadThroughSignedURLs(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := context.Background()
	path := "tenant/ticket/att-screen shot.png"

	upURL, expiresAt, err := b.client.SignUpload(ctx, path)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(upURL, b.fake.URL()+"/storage/v1/object/upload/sign/ticket-attachments/"))
	require.WithinDuration(t, time.Now().Add(storage.UploadURLLifetime), expiresAt, time.Minute)

	// A browser uploads with the URL alone: no key.
	req, err := http.NewRequest(http.MethodPut, upURL, bytes.NewReader([]byte("png bytes")))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "image/png")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	obj, ok := b.fake.Object("ticket-attachments", path)
	require.True(t, ok)
	require.Equal(t, "png bytes", string(obj.Data))

	link, err := b.client.SignDownload(ctx, path, time.Hour)
	require.NoError(t, err)
	resp, err = http.Get(link)
	require.NoError(t, err)
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "png bytes", string(got))
}

func TestFailuresAreClassified(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		arrange func(b bundle) *storage.Client
		call    func(c *storage.Client) error
		want    error
	}{
		{
			name:    "missing object is not found",
			arrange: func(b bundle) *storage.Client { return b.client },
			call: func(c *storage.Client) error {
				_, err := c.SignDownload(context.Background(), "never/uploaded.pdf", time.Minute)
				return err
			},
			want: storage.ErrNotFound,
		},
		{
			name: "outage is unavailable",
			arrange: func(b bundle) *storage.Client {
				b.fake.SetMode(storagefake.ModeDown)
				return b.client
			},
			call: func(c *storage.Client) error {
				_, _, err := c.SignUpload(context.Background(), "a/b/c.txt")
				return err
			},
			want: storage.ErrUnavailable,
		},
		{
			name: "a slow Storage hits the bounded timeout and is unavailable",
			arrange: func(b bundle) *storage.Client {
				b.fake.SetLatency(5 * time.Second)
				c, err := storage.New(storage.Config{SupabaseURL: b.fake.URL(), ServiceRoleKey: config.Secret(storagefake.DefaultServiceKey),
					Bucket: "ticket-attachments", Timeout: 50 * time.Millisecond})
				require.NoError(t, err)
				return c
			},
			call: func(c *storage.Client) error {
				_, _, err := c.SignUpload(context.Background(), "a/b/c.txt")
				return err
			},
			want: storage.ErrUnavailable,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 0)
			err := tc.call(tc.arrange(b))
			require.ErrorIs(t, err, tc.want)
			var se *storage.Error
			require.True(t, errors.As(err, &se))
		})
	}
}

func TestWrongKeyIsRefusedNotUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	c, err := storage.New(storage.Config{SupabaseURL: b.fake.URL(), ServiceRoleKey: "wrong", Bucket: "x"})
	require.NoError(t, err)
	_, _, err = c.SignUpload(context.Background(), "a/b")
	var se *storage.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusForbidden, se.StatusCode)
	require.NotErrorIs(t, err, storage.ErrUnavailable)
	require.NotContains(t, err.Error(), "wrong")
}

func TestNewNamesMissingConfig(t *testing.T) {
	t.Parallel()
	_, err := storage.New(storage.Config{})
	require.ErrorIs(t, err, storage.ErrMissingConfig)
	require.ErrorContains(t, err, "SupabaseURL, ServiceRoleKey, Bucket")
}

// Supabase's API gateway wants the key twice: as apikey and as the Bearer token. supabase-go's
// client sends both; the object path is escaped segment by segment.
func TestSigningCallsCarryTheKeysSupabaseExpects(t *testing.T) {
	t.Parallel()
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"url":"/object/upload/sign/b/t/k/a%20b.png?token=tok"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := storage.New(storage.Config{SupabaseURL: srv.URL + "/", ServiceRoleKey: "service-key", Bucket: "b"})
	require.NoError(t, err)

	u, _, err := c.SignUpload(context.Background(), "t/k/a b.png")
	require.NoError(t, err)
	require.Equal(t, srv.URL+"/storage/v1/object/upload/sign/b/t/k/a%20b.png?token=tok", u)
	require.Equal(t, http.MethodPost, got.Method)
	require.Equal(t, "/storage/v1/object/upload/sign/b/t/k/a%20b.png", got.URL.EscapedPath())
	require.Equal(t, "Bearer service-key", got.Header.Get("Authorization"))
	require.Equal(t, "service-key", got.Header.Get("apikey"))
}
