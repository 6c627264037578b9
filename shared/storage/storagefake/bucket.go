package storagefake

import (
	"encoding/json"
	"net/http"
	"time"
)

// Bucket is a bucket as Storage's bucket API returns it.
type Bucket struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Owner            string   `json:"owner"`
	Public           bool     `json:"public"`
	FileSizeLimit    *int64   `json:"file_size_limit"`
	AllowedMimeTypes []string `json:"allowed_mime_types"`
	CreatedAt        string   `json:"created_at"`
	UpdatedAt        string   `json:"updated_at"`
}

// Bucket returns a bucket by id.
func (s *Server) Bucket(id string) (Bucket, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[id]
	return b, ok
}

// PutBucket creates or replaces a bucket directly (as if made in the dashboard).
func (s *Server) PutBucket(b Bucket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[b.ID] = b
}

// getBucket answers GET /storage/v1/bucket/{id}: the bucket, or Storage's 400 with
// statusCode "404" "Bucket not found".
func (s *Server) getBucket(w http.ResponseWriter, r *http.Request) {
	if b, ok := s.existingBucket(w, r); ok {
		writeJSON(w, http.StatusOK, b)
	}
}

// existingBucket authorizes the request and finds its {id} bucket, or answers as Storage does.
func (s *Server) existingBucket(w http.ResponseWriter, r *http.Request) (Bucket, bool) {
	if !s.authorized(w, r) {
		return Bucket{}, false
	}
	b, ok := s.Bucket(r.PathValue("id"))
	if !ok {
		storageError(w, http.StatusBadRequest, "404", "Bucket not found", "Bucket not found")
	}
	return b, ok
}

type bucketRequest struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Public           bool     `json:"public"`
	FileSizeLimit    *int64   `json:"file_size_limit"`
	AllowedMimeTypes []string `json:"allowed_mime_types"`
}

// createBucket answers POST /storage/v1/bucket: {"name": id}, or 400 with statusCode "409"
// "Duplicate" when the bucket exists.
func (s *Server) createBucket(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	var in bucketRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Name == "" {
		storageError(w, http.StatusBadRequest, "400", "Invalid Input", "body must have a name")
		return
	}
	if in.ID == "" {
		in.ID = in.Name
	}
	if _, ok := s.Bucket(in.ID); ok {
		storageError(w, http.StatusBadRequest, "409", "Duplicate", "The resource already exists")
		return
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	s.PutBucket(Bucket{ID: in.ID, Name: in.Name, Public: in.Public, FileSizeLimit: in.FileSizeLimit,
		AllowedMimeTypes: in.AllowedMimeTypes, CreatedAt: now, UpdatedAt: now})
	writeJSON(w, http.StatusOK, map[string]string{"name": in.ID})
}

// updateBucket answers PUT /storage/v1/bucket/{id}: {"message": "Successfully updated"}.
func (s *Server) updateBucket(w http.ResponseWriter, r *http.Request) {
	b, ok := s.existingBucket(w, r)
	if !ok {
		return
	}
	var in bucketRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		storageError(w, http.StatusBadRequest, "400", "Invalid Input", "unreadable body")
		return
	}
	b.Public, b.FileSizeLimit, b.AllowedMimeTypes = in.Public, in.FileSizeLimit, in.AllowedMimeTypes
	b.UpdatedAt = time.Now().UTC().Format(time.RFC3339Nano)
	s.PutBucket(b)
	writeJSON(w, http.StatusOK, map[string]string{"message": "Successfully updated"})
}
