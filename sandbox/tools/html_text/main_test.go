package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestToText(t *testing.T) {
	tests := []struct {
		name    string
		in      args
		want    result
		wantErr bool
	}{
		{"page", args{HTML: "<title>T</title><p>a &amp; b</p><script>x</script>"}, result{Title: "T", Text: "a & b"}, false},
		{"truncated", args{HTML: "<p>héllo</p>", MaxChars: 2}, result{Text: "hé", Truncated: true}, false},
		{"empty", args{}, result{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := toText(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
