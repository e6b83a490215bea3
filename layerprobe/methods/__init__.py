"""Inference methods (vanilla, contrastive attention, DoLa, ViCrop): each module holds the
intervention and the method object ``layerprobe-eval`` runs; ``registry`` names them."""
