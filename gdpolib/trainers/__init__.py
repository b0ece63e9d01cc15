"""Training on TRL: GDPOConfig / GDPOTrainer (gdpo_trainer), the tracking callback (tracking), and
running a trainer as a resumable run stage (fit). The stages that train SFT, DPO and GDPO for a
run are in gdpolib.stages.train."""
