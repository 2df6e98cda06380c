#include "schedule.h"

namespace gqa::schedules {

using namespace Halide;

namespace {

enum class Family { x86, arm };

Family family(const Target &target) {
    require(!target.has_gpu_feature() && ((target.arch == Target::X86 && target.bits == 64) ||
                                          (target.arch == Target::ARM && target.bits == 64)),
            "no schedule for target " + target.to_string() + " yet");
    return target.arch == Target::ARM ? Family::arm : Family::x86;
}

}  // namespace

void schedule_project(algo::Project &p, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::arm) return arm::schedule_project(p, target, knobs);
    x86::schedule_project(p, target, knobs);
}

void schedule_attend(algo::Attend &a, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::arm) return arm::schedule_attend(a, target, knobs);
    x86::schedule_attend(a, target, knobs);
}

void schedule_output(algo::Linear &l, Func out, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::arm) return arm::schedule_output(l, out, target, knobs);
    x86::schedule_output(l, out, target, knobs);
}

void schedule_rope(Func out, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::arm) return arm::schedule_rope(out, target, knobs);
    x86::schedule_rope(out, target, knobs);
}

}  // namespace gqa::schedules
