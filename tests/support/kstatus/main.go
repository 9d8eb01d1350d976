// Command kstatus reads Kubernetes objects (a JSON array on stdin) and prints, for each, the
// status that sigs.k8s.io/cli-utils' kstatus library computes: the verdict Flux and kpt act on.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	// Raw messages, decoded one by one by Unstructured: it keeps integers as int64, as kstatus expects.
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintln(os.Stderr, "reading objects:", err)
		os.Exit(2)
	}
	verdicts := make([]verdict, 0, len(objects))
	for _, object := range objects {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(object); err != nil {
			fmt.Fprintln(os.Stderr, "decoding an object:", err)
			os.Exit(2)
		}
		result, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", u.GetName(), err)
			os.Exit(1)
		}
		verdicts = append(verdicts, verdict{Name: u.GetName(), Status: result.Status.String(), Message: result.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		fmt.Fprintln(os.Stderr, "writing verdicts:", err)
		os.Exit(2)
	}
}
