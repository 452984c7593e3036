#pragma once
/// @file
/// A name → factory registry shared by every family of interchangeable parts
/// (backbones, reconstruction losses, OOD scores, saliency methods).

#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace nordf {

/// Joins names as "a, b, c" for error messages.
std::string join_names(const std::vector<std::string>& names);

/// A thread-safe map from names to factories producing `Product` from `Args...`.
///
/// Registries are filled explicitly (never by static self-registration, which linkers
/// drop). `make` on an unknown name throws `std::invalid_argument` listing the known names.
template <typename Product, typename... Args>
class Registry {
 public:
  using Factory = std::function<Product(Args...)>;

  /// @param kind what the registry holds, used in error messages ("backbone").
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Adds or replaces `name`. Throws `std::invalid_argument` on an empty name or factory.
  void add(const std::string& name, Factory factory) {
    if (name.empty()) throw std::invalid_argument("register " + kind_ + ": empty name");
    if (!factory) throw std::invalid_argument("register " + kind_ + " '" + name + "': empty factory");
    std::lock_guard<std::mutex> lock(mutex_);
    factories_[name] = std::move(factory);
  }

  /// Removes `name`; returns whether it was registered.
  bool remove(const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    return factories_.erase(name) != 0;
  }

  /// True if `name` is registered.
  bool contains(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return factories_.count(name) != 0;
  }

  /// Builds `name`. Throws `std::invalid_argument` naming the known entries when unknown.
  Product make(const std::string& name, Args... args) const {
    Factory factory;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = factories_.find(name);
      if (it == factories_.end()) {
        std::vector<std::string> known;
        for (const auto& kv : factories_) known.push_back(kv.first);
        throw std::invalid_argument("unknown " + kind_ + " '" + name + "'; known: " + join_names(known));
      }
      factory = it->second;
    }
    return factory(std::forward<Args>(args)...);
  }

  /// Registered names in lexicographic order.
  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    for (const auto& kv : factories_) out.push_back(kv.first);
    return out;
  }

 private:
  std::string kind_;
  mutable std::mutex mutex_;
  std::map<std::string, Factory> factories_;
};

}  // namespace nordf
