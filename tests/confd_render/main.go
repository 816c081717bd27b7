// confd-render: renders a confd template from an etcd snapshot, offline.
//
// It reproduces confd's template functions (github.com/kelseyhightower/confd,
// resource/template/template_funcs.go and memkv) over a JSON snapshot
// {"key": "value", ...}: the store functions get, gets, getv, getvs, ls,
// lsdir, exists and the helpers the nix-infra templates use. Go's own
// text/template does the rest, as in confd. Usage:
//
//	confd-render TEMPLATE SNAPSHOT.json > OUT
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

type KVPair struct {
	Key   string
	Value string
}

type store map[string]string

func (s store) get(key string) (KVPair, error) {
	v, ok := s[key]
	if !ok {
		return KVPair{}, fmt.Errorf("key does not exist: %s", key)
	}
	return KVPair{key, v}, nil
}

func (s store) getv(key string, v ...string) (string, error) {
	if val, ok := s[key]; ok {
		return val, nil
	}
	if len(v) > 0 {
		return v[0], nil
	}
	return "", fmt.Errorf("key does not exist: %s", key)
}

func (s store) gets(pattern string) ([]KVPair, error) {
	out := []KVPair{}
	for k, v := range s {
		m, err := path.Match(pattern, k)
		if err != nil {
			return nil, err
		}
		if m {
			out = append(out, KVPair{k, v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s store) getvs(pattern string) ([]string, error) {
	kvs, err := s.gets(pattern)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, kv := range kvs {
		out = append(out, kv.Value)
	}
	sort.Strings(out)
	return out, nil
}

// children of dir: name -> whether it has children itself (is a directory)
func (s store) children(dir string) map[string]bool {
	dir = strings.TrimSuffix(dir, "/") + "/"
	out := map[string]bool{}
	for k := range s {
		if !strings.HasPrefix(k, dir) {
			continue
		}
		rest := strings.TrimPrefix(k, dir)
		name, tail, isDir := strings.Cut(rest, "/")
		if name == "" {
			continue
		}
		out[name] = out[name] || (isDir && tail != "")
	}
	return out
}

func (s store) ls(dir string) []string {
	out := []string{}
	for name := range s.children(dir) {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func (s store) lsdir(dir string) []string {
	out := []string{}
	for name, isDir := range s.children(dir) {
		if isDir {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (s store) exists(key string) bool {
	_, ok := s[key]
	return ok
}

func unmarshalObject(data string) (map[string]interface{}, error) {
	var ret map[string]interface{}
	err := json.Unmarshal([]byte(data), &ret)
	return ret, err
}

func unmarshalArray(data string) ([]interface{}, error) {
	var ret []interface{}
	err := json.Unmarshal([]byte(data), &ret)
	return ret, err
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: confd-render TEMPLATE SNAPSHOT.json")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := store{}
	if err := json.Unmarshal(raw, &s); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot:", err)
		os.Exit(1)
	}
	funcs := template.FuncMap{
		"get": s.get, "gets": s.gets, "getv": s.getv, "getvs": s.getvs,
		"ls": s.ls, "lsdir": s.lsdir, "exists": s.exists,
		"json": unmarshalObject, "jsonArray": unmarshalArray,
		"base": path.Base, "dir": path.Dir, "split": strings.Split, "join": strings.Join,
		"toUpper": strings.ToUpper, "toLower": strings.ToLower, "contains": strings.Contains,
		"replace": strings.Replace, "trimSuffix": strings.TrimSuffix, "atoi": strconv.Atoi,
		"add": func(a, b int) int { return a + b }, "sub": func(a, b int) int { return a - b },
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpl, err := template.New(path.Base(os.Args[1])).Funcs(funcs).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, "template:", err)
		os.Exit(1)
	}
	if err := tmpl.Execute(os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
