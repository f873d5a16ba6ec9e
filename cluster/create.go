package cluster

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Replicas that start together create the deployment's stream and buckets
// at the same moment, and two things go wrong with JetStream's
// create-or-update:
//   - nats-server 2.9 (Debian 12's package) crashes, a nil pointer in
//     stream.updateWithAdvisory, when a stream is updated while another
//     client creates it: four replicas starting at once brought it down
//     in a few of 30 tries here;
//   - a creation that loses the race is refused with "subjects overlap
//     with an existing stream" or "stream name already in use", although
//     the stream it asked for now exists.
// So a stream or bucket is looked up first and left alone when its
// settings are those asked for (the common case: every start after the
// first), created when it is missing, updated only when its settings
// differ (an operator changed nats.lease_ttl, say), and a creation that
// lost the race is tried again, which then finds it.

// createKV makes sure the bucket cfg describes exists with its settings.
func createKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return created(ctx, func() (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			return js.CreateKeyValue(ctx, cfg)
		case err != nil:
			return nil, err
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, err
		}
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil && sameKV(bs.StreamInfo().Config, cfg) {
			return kv, nil
		}
		return js.UpdateKeyValue(ctx, cfg)
	})
}

// sameKV reports whether a bucket's stream has the settings cfg asks for.
func sameKV(s jetstream.StreamConfig, cfg jetstream.KeyValueConfig) bool {
	return s.Description == cfg.Description && s.MaxMsgsPerSubject == int64(max(cfg.History, 1)) &&
		s.MaxAge == cfg.TTL && s.Storage == cfg.Storage && s.Replicas == max(cfg.Replicas, 1)
}

// createStream makes sure the stream cfg describes exists with its
// settings.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return created(ctx, func() (jetstream.Stream, error) {
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return js.CreateStream(ctx, cfg)
		case err != nil:
			return nil, err
		}
		if sameStream(s.CachedInfo().Config, cfg) {
			return s, nil
		}
		return js.UpdateStream(ctx, cfg)
	})
}

// sameStream reports whether a stream has the settings cfg asks for.
func sameStream(c, cfg jetstream.StreamConfig) bool {
	return c.Description == cfg.Description && slices.Equal(c.Subjects, cfg.Subjects) && c.Retention == cfg.Retention &&
		c.Storage == cfg.Storage && c.MaxAge == cfg.MaxAge && c.Replicas == max(cfg.Replicas, 1)
}

func created[T any](ctx context.Context, create func() (T, error)) (T, error) {
	wait := 20 * time.Millisecond
	for try := 0; ; try++ {
		v, err := create()
		if err == nil || try == 5 || !lostCreationRace(err) || !sleepCtx(ctx, wait) {
			return v, err
		}
		wait *= 2
	}
}

// lostCreationRace reports whether err is JetStream's refusal of a stream
// that another client created at the same moment.
func lostCreationRace(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return true
	}
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse || apiErr.ErrorCode == errCodeSubjectOverlap)
}

// errCodeSubjectOverlap is JetStream's "subjects overlap with an existing
// stream" (nats.go names no constant for it).
const errCodeSubjectOverlap jetstream.ErrorCode = 10065
