"""Knowledge distillation around the ``knowledge_distillation`` criterion: teachers, offline
top-k teacher distributions, sequence-level distillation data and students cut from a teacher.

The baseline the study compares against: word-level KD (Hinton et al. 2015, "Distilling the
Knowledge in a Neural Network") and sequence-level KD (Kim & Rush 2016, "Sequence-Level
Knowledge Distillation"), both of which need a trained, larger teacher.
"""
