// What a training session trains (v1::TrainingSpec) in the runtime's
// terms, shared by the device and the servers so both sides build the same
// adapter and optimizer.
#ifndef EDGESPLIT_PROTO_TRAINING_SPEC_H_
#define EDGESPLIT_PROTO_TRAINING_SPEC_H_

#include <string>

#include "absl/status/status.h"
#include "edgesplit/v1/stage.pb.h"
#include "runtime/lora.h"
#include "runtime/model_config.h"
#include "runtime/train/stage_trainer.h"

namespace edgesplit {

// Validates a spec against a model; errors name the field and value.
absl::Status ValidateTrainingSpec(const v1::TrainingSpec& spec,
                                  const ModelConfig& model);
// The LoRA config a spec describes (layers_to_transform = trained blocks).
LoraConfig LoraConfigFor(const v1::TrainingSpec& spec,
                         const ModelConfig& model);
AdamWOptions AdamWFor(const v1::OptimizerSpec& spec);
// The PEFT tensor name of a trainer's factor ("<module>.lora_A").
std::string PeftTensorName(const std::string& factor);

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_TRAINING_SPEC_H_
