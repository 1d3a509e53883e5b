"""Training: one engine (engine.py) that every trainer of the course runs on, and the schedules they share
(schedule.py). The trainers themselves sit next to their models (vqvae_training.py, gpt.py, classifier.py,
gan_decoder.py, vqgan_training.py) and keep only what is particular to them: building the model and one step."""
