// The public backend queries, answered from the registry of what was built.
#include <string>
#include <vector>

#include "backend_registry.h"
#include "validation.h"

namespace gqa {

std::string_view backend_name(Backend backend) {
    switch (backend) {
    case Backend::reference: return "reference";
    case Backend::x86: return "x86";
    case Backend::arm: return "arm";
    case Backend::cuda: return "cuda";
    case Backend::opencl: return "opencl";
    case Backend::best: return "best";
    }
    return "unknown";
}

Backend backend_from_name(std::string_view name) {
    for (Backend b : {Backend::reference, Backend::x86, Backend::arm, Backend::cuda, Backend::opencl, Backend::best}) {
        if (backend_name(b) == name) return b;
    }
    detail::fail("unknown backend '", name, "'; expected reference, x86, arm, cuda, opencl or best");
}

std::vector<Backend> available_backends() {
    std::vector<Backend> backends;
    for (const detail::BackendEntry &entry : detail::built_backends()) {
        if (entry.unavailable_reason().empty()) backends.push_back(entry.backend);
    }
    return backends;
}

bool backend_built(Backend backend) {
    return backend == Backend::best || detail::built_backend(backend) != nullptr;
}

std::string backend_unavailable_reason(Backend backend) {
    if (backend == Backend::best) return "";
    const detail::BackendEntry *entry = detail::built_backend(backend);
    return entry ? entry->unavailable_reason() : "it is not built into this library";
}

std::string backend_isa(Backend backend) {
    return detail::built_backend(detail::resolve_backend(backend))->isa();
}

namespace detail {

Backend resolve_backend(Backend backend) {
    if (backend == Backend::best) return available_backends().back();
    const std::string reason = backend_unavailable_reason(backend);
    if (!reason.empty()) fail("backend '", backend_name(backend), "' cannot run here: ", reason);
    return backend;
}

const BackendEntry *built_backend(Backend backend) {
    for (const BackendEntry &entry : built_backends()) {
        if (entry.backend == backend) return &entry;
    }
    return nullptr;
}

}  // namespace detail

}  // namespace gqa
