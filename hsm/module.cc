#include "hsm/module.h"

#include <dlfcn.h>
#include <p11-kit/p11-kit.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "hsm/ck.h"

#ifndef CAKEWALK_P11_KIT_PROXY
#define CAKEWALK_P11_KIT_PROXY "p11-kit-proxy.so"
#endif

namespace cakewalk::hsm {
namespace {

using internal::ModuleCore;

// Every module still open at exit, closed by an atexit handler that runs before the modules'
// own static destructors (see the teardown contract in module.h). Never destroyed, so that the
// handler can run at any point of exit.
struct OpenModules {
  std::mutex mu;
  std::vector<std::weak_ptr<ModuleCore>> cores;
};

OpenModules& Registry() {
  static OpenModules* registry = new OpenModules;
  return *registry;
}

void CloseAllAtExit() {
  std::vector<std::shared_ptr<ModuleCore>> live;
  {
    std::lock_guard lock(Registry().mu);
    for (auto& weak : Registry().cores) {
      if (auto core = weak.lock()) live.push_back(std::move(core));
    }
    Registry().cores.clear();
  }
  for (auto& core : live) core->Close().IgnoreError();
}

void Register(const std::shared_ptr<ModuleCore>& core) {
  std::lock_guard lock(Registry().mu);
  std::erase_if(Registry().cores, [](const auto& w) { return w.expired(); });
  Registry().cores.push_back(core);
  // Registered after every load, i.e. after the module's dlopen(): atexit handlers run in
  // reverse order, so this one runs before the destructors the module registered. The handler
  // is idempotent, so running it more than once is harmless.
  std::atexit(CloseAllAtExit);
}

std::string P11KitMessage() {
  const char* m = p11_kit_message();
  return m != nullptr && *m != '\0' ? std::string(m) : std::string("no detail from p11-kit");
}

Status InitializeManaged(CK_FUNCTION_LIST* f, const std::string& description) {
  ERR_set_mark();
  const CK_RV rv = p11_kit_module_initialize(f);
  ERR_pop_to_mark();
  if (rv != CKR_OK) {
    p11_kit_module_release(f);
    return internal::CkrStatus(rv, "C_Initialize")
        .WithContext("cannot initialise " + description + " (" + P11KitMessage() + ")");
  }
  return Status::Ok();
}

Result<std::shared_ptr<ModuleCore>> LoadPath(const std::string& path) {
  const std::string description = "PKCS#11 module " + path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return NotFound(description +
                    " does not exist; set token.module to the path of the token's PKCS#11 module "
                    "(for SoftHSM2: /usr/lib/softhsm/libsofthsm2.so) or to a p11-kit module name");
  }
  ERR_set_mark();
  CK_FUNCTION_LIST* f = p11_kit_module_load(path.c_str(), 0);
  ERR_pop_to_mark();
  if (f == nullptr) {
    return FailedPrecondition("cannot load " + description + ": " + P11KitMessage());
  }
  CW_RETURN_IF_ERROR(InitializeManaged(f, description));
  return std::make_shared<ModuleCore>(f, ModuleCore::Ownership::kP11KitManaged, description);
}

Result<std::shared_ptr<ModuleCore>> LoadByName(const std::string& name) {
  ERR_set_mark();
  CK_FUNCTION_LIST** all = p11_kit_modules_load(nullptr, 0);
  ERR_pop_to_mark();
  if (all == nullptr) {
    return FailedPrecondition("cannot read p11-kit's module registry: " + P11KitMessage());
  }
  CK_FUNCTION_LIST* chosen = p11_kit_module_for_name(all, name.c_str());
  std::string known;
  std::string filename;
  for (CK_FUNCTION_LIST** m = all; *m != nullptr; ++m) {
    if (*m == chosen) {
      if (char* file = p11_kit_module_get_filename(*m)) {
        filename = file;
        std::free(file);
      }
      continue;
    }
    if (char* n = p11_kit_module_get_name(*m)) {
      known += (known.empty() ? "" : ", ") + std::string(n);
      std::free(n);
    }
    p11_kit_module_release(*m);
  }
  std::free(all);
  if (chosen == nullptr) {
    return NotFound("no p11-kit module named '" + name + "' is registered (registered: " +
                    (known.empty() ? std::string("none") : known) +
                    "); set token.module to a module path or to one of those names");
  }
  const std::string description =
      "p11-kit module '" + name + "'" + (filename.empty() ? "" : " (" + filename + ")");
  CW_RETURN_IF_ERROR(InitializeManaged(chosen, description));
  return std::make_shared<ModuleCore>(chosen, ModuleCore::Ownership::kP11KitManaged, description);
}

Result<std::shared_ptr<ModuleCore>> LoadProxy() {
  const std::string description =
      std::string("p11-kit proxy (") + CAKEWALK_P11_KIT_PROXY + ", every registered module)";
  void* handle = dlopen(CAKEWALK_P11_KIT_PROXY, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return FailedPrecondition("cannot load the " + description + ": " +
                              (err != nullptr ? err : "unknown error") +
                              "; set token.module to the token's PKCS#11 module");
  }
  using GetFunctionList = CK_RV (*)(CK_FUNCTION_LIST**);
  auto get = reinterpret_cast<GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  CK_FUNCTION_LIST* f = nullptr;
  if (get == nullptr || get(&f) != CKR_OK || f == nullptr) {
    dlclose(handle);
    return FailedPrecondition("the " + description + " has no usable C_GetFunctionList");
  }
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  ERR_set_mark();
  const CK_RV rv = f->C_Initialize(&args);
  ERR_pop_to_mark();
  if (rv != CKR_OK) {
    dlclose(handle);
    return internal::CkrStatus(rv, "C_Initialize")
        .WithContext("cannot initialise the " + description);
  }
  return std::make_shared<ModuleCore>(f, ModuleCore::Ownership::kProxy, description, handle);
}

}  // namespace

Module::Module(std::shared_ptr<internal::ModuleCore> core) : core_(std::move(core)) {}

Module::~Module() {
  if (core_) core_->Close().IgnoreError();
}

Result<std::unique_ptr<Module>> Module::Load(const std::optional<std::string>& spec) {
  Result<std::shared_ptr<ModuleCore>> core = [&]() -> Result<std::shared_ptr<ModuleCore>> {
    if (!spec.has_value()) return LoadProxy();
    if (spec->empty()) {
      return InvalidArgument(
          "token.module is empty; give a module path, a p11-kit module name, or leave it out to "
          "use p11-kit's proxy");
    }
    if (spec->find('/') != std::string::npos) return LoadPath(*spec);
    return LoadByName(*spec);
  }();
  if (!core.ok()) return core.status();
  Register(*core);
  return std::unique_ptr<Module>(new Module(std::move(*core)));
}

const std::string& Module::description() const { return core_->description(); }

Status Module::Close() { return core_->Close(); }

bool Module::closed() const { return core_->closed(); }

namespace internal {

std::unique_ptr<Module> ModuleAccess::Borrow(CK_FUNCTION_LIST* functions, std::string description) {
  return std::unique_ptr<Module>(new Module(std::make_shared<ModuleCore>(
      functions, ModuleCore::Ownership::kBorrowed, std::move(description))));
}

}  // namespace internal
}  // namespace cakewalk::hsm
