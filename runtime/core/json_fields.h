// Typed, range-checked fields of untrusted JSON: config.json, store manifests, placement,
// profile and activation files (and request bodies later). Every number is read with an explicit
// range, checked finite and inside the target type before it is converted, so no float->int
// conversion or narrowing ever sees a value it cannot hold. One message format names the file,
// the field path and what is allowed:
//   "<where>: field 'rope_scaling.original_max_position_embeddings' is 1e+30; it must be an
//    integer in [1, 2147483647]"
// Works on nlohmann::json and nlohmann::ordered_json alike.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"

namespace mt {

template <class Json>
class JsonFields {
 public:
  // `where` names the file (and record) in errors; `path` is the dotted path of `obj` itself.
  JsonFields(const Json& obj, std::string where, std::string path = "")
      : obj_(obj), where_(std::move(where)), path_(std::move(path)) {}

  const Json& json() const { return obj_; }
  const std::string& where() const { return where_; }
  // "rope_scaling.factor": the dotted path of a member.
  std::string field(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  // The member, or null when it is absent or JSON null (optional fields keep their default).
  const Json* find(const char* key) const {
    if (!obj_.is_object()) return nullptr;
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const char* key) const { return find(key) != nullptr; }

  // An integer in [lo, hi]. JSON integers, and floats with an integral value (hand-edited files
  // write 2.4e10); the range is checked before any conversion.
  Result<int64_t> integer(const char* key, int64_t lo, int64_t hi) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    return integer_value(*v, key, lo, hi);
  }
  // The same, `fallback` when absent or null.
  Result<int64_t> integer_or(const char* key, int64_t fallback, int64_t lo, int64_t hi) const {
    const Json* v = find(key);
    return v ? integer_value(*v, key, lo, hi) : Result<int64_t>(fallback);
  }
  // A non-negative integer in [lo, hi], the whole uint64 range available.
  Result<uint64_t> count(const char* key, uint64_t lo, uint64_t hi) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    return count_value(*v, key, lo, hi);
  }
  // A finite number in [lo, hi].
  Result<double> number(const char* key, double lo, double hi) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    return number_value(*v, key, lo, hi);
  }
  Result<double> number_or(const char* key, double fallback, double lo, double hi) const {
    const Json* v = find(key);
    return v ? number_value(*v, key, lo, hi) : Result<double>(fallback);
  }
  Result<std::string> string(const char* key) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    if (!v->is_string()) return wrong(key, *v, "a string");
    return v->template get<std::string>();
  }
  Result<std::string> string_or(const char* key, const std::string& fallback) const {
    return find(key) ? string(key) : Result<std::string>(fallback);
  }
  Result<bool> boolean(const char* key) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    if (!v->is_boolean()) return wrong(key, *v, "true or false");
    return v->template get<bool>();
  }
  Result<bool> boolean_or(const char* key, bool fallback) const {
    const Json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) return wrong(key, *v, "true or false");
    return v->template get<bool>();
  }
  // A member object as a reader of its own (path extended); an error when it is not an object.
  Result<JsonFields> object(const char* key) const {
    const Json* v = find(key);
    if (!v) return missing(key);
    if (!v->is_object()) return wrong(key, *v, "an object");
    return JsonFields(*v, where_, field(key));
  }

  // The same checks on a value that is not a member (array elements): `name` as it should read
  // in messages ("counts[3]").
  Result<int64_t> integer_value(const Json& v, const std::string& name, int64_t lo, int64_t hi) const {
    const std::string want = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (v.is_number_unsigned()) {
      const uint64_t u = v.template get<uint64_t>();
      if (hi < 0 || u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo) return wrong(name, v, want);
      return static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) {
      const int64_t s = v.template get<int64_t>();
      if (s < lo || s > hi) return wrong(name, v, want);
      return s;
    }
    if (v.is_number_float()) {
      const double d = v.template get<double>();
      // Compared as doubles first: only then is the conversion defined.
      if (std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(lo) && d <= static_cast<double>(hi) &&
          std::fabs(d) < 9.2e18)
        return static_cast<int64_t>(d);
    }
    return wrong(name, v, want);
  }
  Result<uint64_t> count_value(const Json& v, const std::string& name, uint64_t lo, uint64_t hi) const {
    const std::string want = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (v.is_number_unsigned()) {
      const uint64_t u = v.template get<uint64_t>();
      if (u < lo || u > hi) return wrong(name, v, want);
      return u;
    }
    if (v.is_number_integer()) {
      const int64_t s = v.template get<int64_t>();
      if (s < 0 || static_cast<uint64_t>(s) < lo || static_cast<uint64_t>(s) > hi) return wrong(name, v, want);
      return static_cast<uint64_t>(s);
    }
    if (v.is_number_float()) {
      const double d = v.template get<double>();
      if (std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(lo) && d <= static_cast<double>(hi) &&
          d >= 0 && d < 1.8e19)
        return static_cast<uint64_t>(d);
    }
    return wrong(name, v, want);
  }
  Result<double> number_value(const Json& v, const std::string& name, double lo, double hi) const {
    if (v.is_number()) {
      const double d = v.template get<double>();
      if (std::isfinite(d) && d >= lo && d <= hi) return d;
    }
    return wrong(name, v, "a finite number in [" + shown(lo) + ", " + shown(hi) + "]");
  }

  Error fail(const std::string& key, const std::string& what) const {
    return make_error(where_ + ": field '" + field(key) + "' " + what);
  }

 private:
  static std::string shown(double d) {
    if (d == std::numeric_limits<double>::max()) return "max";
    if (d == std::numeric_limits<double>::lowest()) return "-max";
    Json j = d;
    return j.dump();
  }
  Error missing(const std::string& key) const { return make_error(where_ + ": missing field '" + field(key) + "'"); }
  Error wrong(const std::string& key, const Json& got, const std::string& want) const {
    std::string s = got.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return make_error(where_ + ": field '" + field(key) + "' is " + s + "; it must be " + want);
  }

  const Json& obj_;
  std::string where_;
  std::string path_;
};

}  // namespace mt
