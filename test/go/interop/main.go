// Command interop runs etcd's own Go naming code (go.etcd.io/etcd/clientv3/naming/endpoints
// and .../resolver, as Debian's golang-etcd-server-dev ships them) against etcd-service-registry,
// for test/integration/grpc-go.test.ts. Built offline in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go build -o interop ./test/go/interop
//
// Subcommands (ENDPOINTS is a comma-separated list of etcd client URLs; TARGET is the key
// prefix of one service without a trailing slash, e.g. "x/services/greeter"):
//
//	add ENDPOINTS TARGET KEY ADDR METADATA_JSON   endpoints.Manager.AddEndpoint, prints "added"
//	list ENDPOINTS TARGET                         endpoints.Manager.List, prints the map as JSON
//	watch ENDPOINTS TARGET                        NewWatchChannel: "ready", then one JSON line per update
//	call ENDPOINTS TARGET AUTHORITY N             N unary calls to /greeter.Greeter/SayHello through
//	                                              etcd's gRPC resolver with round_robin, one JSON reply a line
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "interop: "+format+"\n", args...)
	os.Exit(2)
}

func client(urls string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(urls, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fail("etcd client: %v", err)
	}
	return c
}

func manager(c *clientv3.Client, target string) endpoints.Manager {
	m, err := endpoints.NewManager(c, target)
	if err != nil {
		fail("endpoints.NewManager: %v", err)
	}
	return m
}

func printJSON(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(string(b))
}

// rawCodec sends and receives the message bytes as they are (the Node service speaks JSON).
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	if len(os.Args) < 4 {
		fail("usage: interop add|list|watch|call ENDPOINTS TARGET ...")
	}
	command, urls, target := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client(urls)
	defer c.Close()

	switch command {
	case "add":
		if len(os.Args) != 7 {
			fail("usage: interop add ENDPOINTS TARGET KEY ADDR METADATA_JSON")
		}
		var metadata interface{}
		if err := json.Unmarshal([]byte(os.Args[6]), &metadata); err != nil {
			fail("metadata: %v", err)
		}
		if err := manager(c, target).AddEndpoint(ctx, os.Args[4], endpoints.Endpoint{Addr: os.Args[5], Metadata: metadata}); err != nil {
			fail("AddEndpoint: %v", err)
		}
		fmt.Println("added")

	case "list":
		eps, err := manager(c, target).List(ctx)
		if err != nil {
			fail("List: %v", err)
		}
		printJSON(eps)

	case "watch":
		wch, err := manager(c, target).NewWatchChannel(ctx)
		if err != nil {
			fail("NewWatchChannel: %v", err)
		}
		// NewWatchChannel read the prefix at revision R and watches from R+1: nothing written
		// after this line is missed. The current list (if any) comes as the first batch.
		fmt.Println("ready")
		for ups := range wch {
			for _, up := range ups {
				printJSON(map[string]interface{}{"Op": up.Op, "Key": up.Key, "Addr": up.Endpoint.Addr, "Metadata": up.Endpoint.Metadata})
			}
		}

	case "call":
		if len(os.Args) != 6 {
			fail("usage: interop call ENDPOINTS TARGET AUTHORITY N")
		}
		n, err := strconv.Atoi(os.Args[5])
		if err != nil {
			fail("N: %v", err)
		}
		builder, err := resolver.NewBuilder(c)
		if err != nil {
			fail("resolver.NewBuilder: %v", err)
		}
		options := []grpc.DialOption{
			grpc.WithInsecure(),
			grpc.WithResolvers(builder),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
			grpc.WithBlock(),
		}
		if os.Args[4] != "" {
			// Without it grpc-go 1.33 sends the target path as :authority: Node's HTTP/2 server
			// resets the stream (PROTOCOL_ERROR).
			options = append(options, grpc.WithAuthority(os.Args[4]))
		}
		dialCtx, dialCancel := context.WithTimeout(ctx, 10*time.Second)
		defer dialCancel()
		conn, err := grpc.DialContext(dialCtx, "etcd:///"+target, options...)
		if err != nil {
			fail("Dial: %v", err)
		}
		defer conn.Close()
		for i := 0; i < n; i++ {
			request := []byte(`{"name":"go"}`)
			var reply []byte
			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Invoke(callCtx, "/greeter.Greeter/SayHello", &request, &reply, grpc.ForceCodec(rawCodec{}))
			callCancel()
			if err != nil {
				fail("call %d: %v", i, err)
			}
			fmt.Println(string(reply))
		}

	default:
		fail("unknown command %q", command)
	}
}
