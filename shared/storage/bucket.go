package storage

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// Bucket is the client's bucket as Storage's bucket API describes it (GET /bucket/{id}).
// storage-go's own Bucket type misspells allowed_mime_types, so this one is read directly.
type Bucket struct {
	ID               string   `json:"id"`
	Public           bool     `json:"public"`
	FileSizeLimit    *int64   `json:"file_size_limit"`
	AllowedMimeTypes []string `json:"allowed_mime_types"`
}

// bucketBody is what POST /bucket and PUT /bucket/{id} take.
type bucketBody struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Public           bool     `json:"public"`
	FileSizeLimit    *int64   `json:"file_size_limit,omitempty"`
	AllowedMimeTypes []string `json:"allowed_mime_types,omitempty"`
}

// GetBucket reads the client's bucket; found is false when Storage says it does not exist.
func (c *Client) GetBucket(ctx context.Context) (b Bucket, found bool, err error) {
	err = c.call(ctx, "read bucket", http.MethodGet, "/bucket/"+url.PathEscape(c.bucket), nil, &b)
	if errors.Is(err, ErrNotFound) {
		return Bucket{}, false, nil
	}
	return b, err == nil, err
}

// CreateBucket creates the client's bucket as want describes (POST /bucket); want.ID is
// ignored.
func (c *Client) CreateBucket(ctx context.Context, want Bucket) error {
	return c.call(ctx, "create bucket", http.MethodPost, "/bucket", c.body(want), nil)
}

// UpdateBucket sets the client's bucket to want (PUT /bucket/{id}).
func (c *Client) UpdateBucket(ctx context.Context, want Bucket) error {
	return c.call(ctx, "update bucket", http.MethodPut, "/bucket/"+url.PathEscape(c.bucket), c.body(want), nil)
}

func (c *Client) body(want Bucket) bucketBody {
	return bucketBody{ID: c.bucket, Name: c.bucket, Public: want.Public, FileSizeLimit: want.FileSizeLimit, AllowedMimeTypes: want.AllowedMimeTypes}
}

// BucketName is the bucket the client works in.
func (c *Client) BucketName() string { return c.bucket }
